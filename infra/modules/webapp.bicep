// The bot's hosting: App Service for Linux running the container (Dockerfile at the repository root).
// Two or more instances, spread over availability zones: the bot's state is in PostgreSQL (DATABASE_URL),
// none of it on an instance's disk, so any instance can take any request and any background job.

@description('Name of the App Service plan.')
param planName string

@description('Name of the web app; the bot answers at https://<name>.azurewebsites.net/api/messages.')
param name string

@description('Azure region.')
param location string

@description('App Service plan SKU (Linux). P0v3 (Premium v3): the smallest size that can be zone-redundant. B1 allows up to 3 instances, without zones.')
param skuName string = 'P0v3'

@description('Number of instances (at least 2: no single point of failure).')
@minValue(2)
param capacity int = 2

@description('Spread the instances over availability zones (Premium v2/v3/v4 plans; false for B1).')
param zoneRedundant bool = true

@description('Container image, e.g. myregistry.azurecr.io/veilig-doorverwijzen:0.1.0.')
param containerImage string

@description('Pull the image with the managed identity (Azure Container Registry); false for a public image.')
param pullWithManagedIdentity bool = true

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Bot Framework authentication: UserAssignedMSI (no secret) or SingleTenant (app registration).')
@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
param botAppType string

@description('MicrosoftAppId: the identity\'s client id (UserAssignedMSI) or the app registration\'s (SingleTenant).')
param botAppId string

@description('Microsoft Entra tenant of the bot.')
param tenantId string

@description('Key Vault URI, e.g. https://kv-name.vault.azure.net/.')
param keyVaultUri string

@description('Key Vault name, for the SingleTenant app password reference.')
param keyVaultName string

@description('Key Vault secret with the app registration\'s client secret (SingleTenant only).')
param botPasswordSecretName string = 'bot-app-password'

@description('The mailbox the referrals are sent from (Graph sendMail as this user).')
param mailFrom string

@description('Entra tenant ids whose users may refer (Kind en Gezin), comma-separated.')
param referrerTenantIds string

@description('Entra tenant ids whose Teams channels may be linked as an OCMW\'s, comma-separated.')
param ocmwTenantIds string

@description('DATABASE_URL: postgresql://<role>@<server>.postgres.database.azure.com:5432/<database>?sslmode=verify-full (no password).')
param databaseUrl string

@description('Log Analytics workspace for the diagnostic settings.')
param workspaceId string

@description('Name of the Application Insights component (same resource group).')
param appInsightsName string

param tags object = {}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Names the bot reads (bot/config.py). No secret values: the SingleTenant password is a Key Vault reference,
// and the database password is an Entra token the bot gets with AZURE_CLIENT_ID's identity (DATABASE_AUTH=entra).
// No BOT_DATA_DIR: nothing of the bot's state is on an instance's disk (the image's /data stays empty).
var baseSettings = [
  {
    name: 'MicrosoftAppId'
    value: botAppId
  }
  {
    name: 'MicrosoftAppType'
    value: botAppType
  }
  {
    name: 'MicrosoftAppTenantId'
    value: tenantId
  }
  {
    name: 'KEY_VAULT_URL'
    value: keyVaultUri
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'MAIL_TRANSPORT'
    value: 'graph'
  }
  {
    name: 'MAIL_FROM'
    value: mailFrom
  }
  {
    name: 'BOT_ENV'
    value: 'production'
  }
  {
    name: 'REFERRER_TENANT_IDS'
    value: referrerTenantIds
  }
  {
    name: 'OCMW_TENANT_IDS'
    value: ocmwTenantIds
  }
  {
    name: 'DATABASE_URL'
    value: databaseUrl
  }
  {
    name: 'DATABASE_AUTH'
    value: 'entra'
  }
  {
    name: 'HOST'
    value: '0.0.0.0'
  }
  {
    name: 'PORT'
    value: '3978'
  }
  {
    name: 'WEBSITES_PORT'
    value: '3978'
  }
  {
    name: 'WEBSITES_ENABLE_APP_SERVICE_STORAGE'
    value: 'false'
  }
  {
    // SIGTERM to SIGKILL: room for the bot's drain on a stop (STOP_DRAIN_SECONDS in bot/app.py)
    name: 'WEBSITES_CONTAINER_STOP_TIME_LIMIT'
    value: '30'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  // Read by the Azure Monitor exporter itself: it sends to this Application Insights component only (no usage
  // reports of its own to Microsoft, no remote configuration, no SDK statistics).
  {
    name: 'APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL'
    value: 'true'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED'
    value: 'true'
  }
  {
    name: 'APPLICATIONINSIGHTS_SDKSTATS_DISABLED'
    value: 'true'
  }
]
var passwordSetting = [
  {
    name: 'MicrosoftAppPassword'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${botPasswordSecretName})'
  }
]

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'linux'
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222: Teams reaches the bot through the Bot Framework connector over the internet; /api/messages must be public. Every request carries a Bot Framework JWT that the bot validates (MicrosoftAppId is always set here).
  // checkov:skip=CKV_AZURE_17: the Bot Framework connector presents no client certificate; callers are authenticated by the Bot Framework JWT instead.
  name: name
  location: location
  tags: tags
  kind: 'app,linux,container'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      linuxFxVersion: 'DOCKER|${containerImage}'
      acrUseManagedIdentityCreds: pullWithManagedIdentity
      acrUserManagedIdentityID: pullWithManagedIdentity ? identityClientId : null
      alwaysOn: true
      http20Enabled: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      healthCheckPath: '/healthz'
      httpLoggingEnabled: true
      detailedErrorLoggingEnabled: true
      requestTracingEnabled: true
      remoteDebuggingEnabled: false
      numberOfWorkers: capacity
      appSettings: (botAppType == 'SingleTenant') ? concat(baseSettings, passwordSetting) : baseSettings
    }
  }
}

// No publishing with user names and passwords: deploy the image, nothing else.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AppServiceHTTPLogs'
        enabled: true
      }
      {
        category: 'AppServiceConsoleLogs'
        enabled: true
      }
      {
        category: 'AppServiceAppLogs'
        enabled: true
      }
      {
        category: 'AppServicePlatformLogs'
        enabled: true
      }
      {
        category: 'AppServiceAuditLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output hostName string = site.properties.defaultHostName
output messagingEndpoint string = 'https://${site.properties.defaultHostName}/api/messages'
