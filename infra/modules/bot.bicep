// The Azure Bot resource (single tenant) with the Microsoft Teams channel.

@description('Name of the Azure Bot resource (its handle).')
param name string

@description('Name shown in the Azure portal.')
param displayName string

@description('https://<web app>/api/messages')
param messagingEndpoint string

@description('UserAssignedMSI (no secret, the identity below) or SingleTenant (an app registration).')
@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
param appType string

@description('MicrosoftAppId: the identity\'s client id (UserAssignedMSI) or the app registration\'s (SingleTenant).')
param appId string

@description('Microsoft Entra tenant of the bot.')
param tenantId string

@description('Resource id of the user-assigned managed identity (UserAssignedMSI only).')
param identityId string

param tags object = {}

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: 'F0'
  }
  properties: {
    displayName: displayName
    endpoint: messagingEndpoint
    msaAppType: appType
    msaAppId: appId
    msaAppTenantId: tenantId
    msaAppMSIResourceId: (appType == 'UserAssignedMSI') ? identityId : null
    disableLocalAuth: true
    isStreamingSupported: false
    publicNetworkAccess: 'Enabled'
  }
}

resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
    }
  }
}

output appId string = appId
