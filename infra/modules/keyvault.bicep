// Key Vault for the ZIP passwords (one secret per protocol, named by the protocol's
// `zip_password_secret`). RBAC only: the bot's identity may read secrets of this vault, nothing else.
// Secrets are added by an administrator (infra/README.md), never by this template.

@description('Name of the Key Vault (globally unique, 3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Microsoft Entra tenant of the vault.')
param tenantId string

@description('Principal (object) id of the bot\'s managed identity.')
param readerPrincipalId string

@description('Log Analytics workspace for the audit log.')
param workspaceId string

@description('Days a deleted secret or vault can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

param tags object = {}

// Built-in role "Key Vault Secrets User": read secret values, nothing more.
var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: App Service reaches the vault over its public endpoint from shared outbound IPs (no firewall rule can name them); every call needs an Entra token and the Secrets User role on this vault. A private endpoint needs VNet integration: see infra/README.md, "Hardening".
  // checkov:skip=CKV_AZURE_189: same reason: without VNet integration the web app has no private path to the vault, and administrators set the ZIP passwords from their own workstation.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
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

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
