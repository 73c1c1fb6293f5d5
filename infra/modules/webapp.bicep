// The bot's hosting: App Service for Linux running the container (Dockerfile at the repository root).
// One instance: the bot keeps its state in SQLite under /home (App Service's persistent storage).

@description('Name of the App Service plan.')
param planName string

@description('Name of the web app; the bot answers at https://<name>.azurewebsites.net/api/messages.')
param name string

@description('Azure region.')
param location string

@description('App Service plan SKU (Linux). B1 is enough for one team; P0v3 for more headroom.')
param skuName string = 'B1'

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

@description('Log Analytics workspace for the diagnostic settings.')
param workspaceId string

@description('Name of the Application Insights component (same resource group).')
param appInsightsName string

param tags object = {}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Names the bot reads (bot/config.py). No secret values: the SingleTenant password is a Key Vault reference.
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
    name: 'BOT_DATA_DIR'
    value: '/home/data'
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
    value: 'true'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
]
var passwordSetting = [
  {
    name: 'MicrosoftAppPassword'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${botPasswordSecretName})'
  }
]

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  // checkov:skip=CKV_AZURE_225: one instance by design: the bot's state is one SQLite file (drafts, register, outbox); zone redundancy needs three. The storage account is for the scale-out backend that will lift this.
  name: planName
  location: location
  tags: tags
  kind: 'linux'
  sku: {
    name: skuName
    capacity: 1
  }
  properties: {
    reserved: true
    zoneRedundant: false
  }
}

resource site 'Microsoft.Web/sites@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222: Teams reaches the bot through the Bot Framework connector over the internet; /api/messages must be public. Every request carries a Bot Framework JWT that the bot validates (MicrosoftAppId is always set here).
  // checkov:skip=CKV_AZURE_17: the Bot Framework connector presents no client certificate; callers are authenticated by the Bot Framework JWT instead.
  // checkov:skip=CKV_AZURE_212: one instance by design (SQLite state, see the plan above); App Service restarts it on a failed /healthz.
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
      numberOfWorkers: 1
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
