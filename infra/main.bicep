// veilig-doorverwijzen on Azure: the Teams bot on two or more App Service instances, its identity, its
// PostgreSQL database, Key Vault, storage and monitoring.
// Deploy into one resource group (infra/README.md):
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.example.json
// No secret goes through this template: ZIP passwords (and, for SingleTenant, the app password)
// are put into the vault by an administrator afterwards; the bot logs in to PostgreSQL with an Entra token.

targetScope = 'resourceGroup'

@description('Azure region of every resource except the Azure Bot (global). Must have availability zones for the zone-redundant web app and database (westeurope has them).')
param location string = 'westeurope'

@description('Microsoft Entra tenant of the bot, the vault and the Teams users.')
param tenantId string = tenant().tenantId

@description('Short name the resource names start with (letters, digits, hyphens).')
@minLength(3)
@maxLength(16)
param baseName string = 'vd-prod'

@description('Name of the web app (globally unique): https://<name>.azurewebsites.net')
param webAppName string = '${baseName}-bot-${uniqueString(resourceGroup().id)}'

@description('Name of the App Service plan.')
param appServicePlanName string = '${baseName}-plan'

@description('App Service plan SKU (Linux): Premium v3 (P0v3, P1v3, ...) for zone redundancy; B1 allows up to 3 instances but no zones.')
param appServiceSkuName string = 'P0v3'

@description('Number of App Service instances running the bot (at least 2: no single point of failure).')
@minValue(2)
param appServiceCapacity int = 2

@description('Spread the instances over availability zones (Premium v2/v3/v4 only; false for B1).')
param appServiceZoneRedundant bool = true

@description('Name of the Azure Bot resource.')
param botName string = '${baseName}-bot'

@description('Name of the user-assigned managed identity.')
param identityName string = '${baseName}-id'

@description('Name of the Key Vault (globally unique, at most 24 characters).')
@maxLength(24)
param keyVaultName string = 'kv-${take(uniqueString(resourceGroup().id, baseName), 13)}'

@description('Name of the storage account (globally unique, lowercase letters and digits, at most 24).')
@maxLength(24)
param storageAccountName string = 'st${take(uniqueString(resourceGroup().id, baseName), 13)}'

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string = '${baseName}-logs'

@description('Name of the PostgreSQL Flexible Server (globally unique, lowercase): <name>.postgres.database.azure.com')
@maxLength(63)
param postgresServerName string = toLower('${baseName}-pg-${uniqueString(resourceGroup().id)}')

@description('PostgreSQL compute size (Standard_D2ds_v5: General Purpose, 2 vCores).')
param postgresSkuName string = 'Standard_D2ds_v5'

@description('PostgreSQL compute tier of postgresSkuName; Burstable cannot be zone-redundant.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresSkuTier string = 'GeneralPurpose'

@description('PostgreSQL high availability: ZoneRedundant (a standby in another zone) or Disabled.')
@allowed([
  'ZoneRedundant'
  'Disabled'
])
param postgresHighAvailability string = 'ZoneRedundant'

@description('PostgreSQL storage in GiB (auto-grow on).')
param postgresStorageSizeGB int = 32

@description('Days of PostgreSQL point-in-time restore (7-35).')
@minValue(7)
@maxValue(35)
param postgresBackupRetentionDays int = 35

@description('Keep the PostgreSQL backups in the paired region too (northeurope for westeurope); fixed when the server is created.')
param postgresGeoRedundantBackup bool = true

@description('Register the bot\'s identity as a PostgreSQL Entra administrator (false: least-privilege role, see infra/README.md).')
param postgresAppIsAdministrator bool = true

@description('Object id of the Entra group of people who administer PostgreSQL; empty for none.')
param postgresAdministratorGroupObjectId string = ''

@description('Display name of that Entra group.')
param postgresAdministratorGroupName string = ''

@description('Name of the Application Insights component.')
param appInsightsName string = '${baseName}-appi'

@description('Container image of the bot, e.g. myregistry.azurecr.io/veilig-doorverwijzen:0.1.0.')
param containerImage string

@description('Existing Azure Container Registry in this resource group to pull from with the identity; empty for a public image.')
param containerRegistryName string = ''

@description('Bot Framework authentication: UserAssignedMSI (recommended, no secret) or SingleTenant (app registration + secret in the vault).')
@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
param botAppType string = 'UserAssignedMSI'

@description('SingleTenant only: the Application (client) ID of the bot\'s app registration.')
param botAppRegistrationId string = ''

@description('The mailbox the referrals are sent from (Microsoft Graph sendMail as this user).')
param mailFrom string = 'doorverwijzing@opgroeien.be'

@description('Entra tenant ids whose users may refer (Kind en Gezin), comma-separated: REFERRER_TENANT_IDS.')
param referrerTenantIds string = tenantId

@description('Entra tenant ids of the OCMWs, comma-separated: only Teams channels of these tenants can be linked with koppel (OCMW_TENANT_IDS).')
param ocmwTenantIds string

@description('The operators\' mailbox: every alert (stuck outbox, a give-up, /readyz failing, 5xx, the Bot Framework\'s signing keys, Key Vault) is mailed here.')
param opsMailbox string

@description('Tags on every resource.')
param tags object = {
  application: 'veilig-doorverwijzen'
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: identityName
    location: location
    tags: tags
  }
}

var botAppId = (botAppType == 'UserAssignedMSI') ? identity.outputs.clientId : botAppRegistrationId

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: logAnalyticsName
    appInsightsName: appInsightsName
    location: location
    publisherPrincipalId: identity.outputs.principalId
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyVault'
  params: {
    name: keyVaultName
    location: location
    tenantId: tenantId
    readerPrincipalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    name: postgresServerName
    location: location
    tenantId: tenantId
    appPrincipalId: identity.outputs.principalId
    appPrincipalName: identity.outputs.name
    appIsAdministrator: postgresAppIsAdministrator
    administratorGroupObjectId: postgresAdministratorGroupObjectId
    administratorGroupName: postgresAdministratorGroupName
    workspaceId: monitoring.outputs.workspaceId
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    highAvailabilityMode: postgresHighAvailability
    storageSizeGB: postgresStorageSizeGB
    backupRetentionDays: postgresBackupRetentionDays
    geoRedundantBackup: postgresGeoRedundantBackup
    tags: tags
  }
}

module acrPull 'modules/acr-pull.bicep' = if (!empty(containerRegistryName)) {
  name: 'acrPull'
  params: {
    registryName: containerRegistryName
    principalId: identity.outputs.principalId
  }
}

module webApp 'modules/webapp.bicep' = {
  name: 'webApp'
  params: {
    planName: appServicePlanName
    name: webAppName
    location: location
    skuName: appServiceSkuName
    capacity: appServiceCapacity
    zoneRedundant: appServiceZoneRedundant
    containerImage: containerImage
    pullWithManagedIdentity: !empty(containerRegistryName)
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    botAppType: botAppType
    botAppId: botAppId
    tenantId: tenantId
    keyVaultUri: keyVault.outputs.uri
    keyVaultName: keyVault.outputs.name
    mailFrom: mailFrom
    referrerTenantIds: referrerTenantIds
    ocmwTenantIds: ocmwTenantIds
    databaseUrl: postgres.outputs.databaseUrl
    workspaceId: monitoring.outputs.workspaceId
    appInsightsName: monitoring.outputs.appInsightsName
    tags: tags
  }
  dependsOn: [
    acrPull
  ]
}

module bot 'modules/bot.bicep' = {
  name: 'bot'
  params: {
    name: botName
    displayName: 'Veilig doorverwijzen'
    messagingEndpoint: webApp.outputs.messagingEndpoint
    appType: botAppType
    appId: botAppId
    tenantId: tenantId
    identityId: identity.outputs.id
    tags: tags
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    baseName: baseName
    location: location
    appInsightsId: monitoring.outputs.appInsightsId
    webAppHostName: webApp.outputs.hostName
    opsMailbox: opsMailbox
    tags: tags
  }
}

@description('MicrosoftAppId for the Teams package: MicrosoftAppId=<this> make package')
output microsoftAppId string = botAppId
output messagingEndpoint string = webApp.outputs.messagingEndpoint
output webAppName string = webAppName
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output storageAccountName string = storage.outputs.name
output postgresServerName string = postgres.outputs.name
output postgresFqdn string = postgres.outputs.fqdn
@description('DATABASE_URL the web app gets (no password: the bot logs in with an Entra token).')
output databaseUrl string = postgres.outputs.databaseUrl
@description('Client id of the managed identity: the AppId of the Exchange application access policy.')
output identityClientId string = identity.outputs.clientId
@description('Object id of the managed identity\'s service principal: gets the Graph Mail.Send app role.')
output identityPrincipalId string = identity.outputs.principalId
