// veilig-doorverwijzen on Azure: the Teams bot, its identity, Key Vault, storage and monitoring.
// Deploy into one resource group (infra/README.md):
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.example.json
// No secret goes through this template: ZIP passwords (and, for SingleTenant, the app password)
// are put into the vault by an administrator afterwards.

targetScope = 'resourceGroup'

@description('Azure region of every resource except the Azure Bot (global).')
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

@description('App Service plan SKU (Linux).')
param appServiceSkuName string = 'B1'

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

@description('MicrosoftAppId for the Teams package: MicrosoftAppId=<this> make package')
output microsoftAppId string = botAppId
output messagingEndpoint string = webApp.outputs.messagingEndpoint
output webAppName string = webAppName
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output storageAccountName string = storage.outputs.name
@description('Client id of the managed identity: the AppId of the Exchange application access policy.')
output identityClientId string = identity.outputs.clientId
@description('Object id of the managed identity\'s service principal: gets the Graph Mail.Send app role.')
output identityPrincipalId string = identity.outputs.principalId
