// The bot's shared state in production: Azure Database for PostgreSQL (Flexible Server), one database that
// every App Service instance uses. Entra ID authentication only: the bot's managed identity logs in with an
// access token as its password, so no database password exists anywhere. TLS 1.2 or later is required.
// Network: public endpoint, reachable from Azure only (firewall rule 0.0.0.0); private access through a
// VNet is the recommended hardening (infra/README.md, "Hardening options").

@description('Name of the server (globally unique, 3-63 lowercase letters, digits and hyphens): <name>.postgres.database.azure.com')
@minLength(3)
@maxLength(63)
param name string

@description('Azure region. Zone-redundant high availability needs a region with availability zones (westeurope has them).')
param location string

@description('Microsoft Entra tenant whose identities may log in.')
param tenantId string

@description('Object (principal) id of the bot\'s user-assigned managed identity.')
param appPrincipalId string

@description('Name of the bot\'s managed identity: its PostgreSQL role, the user name in DATABASE_URL.')
param appPrincipalName string

@description('Register the bot\'s identity as an Entra administrator (simplest). false: only the administrator group below is; it then creates a least-privilege role for the bot (infra/README.md).')
param appIsAdministrator bool = true

@description('Object id of an Entra group whose members administer the server (people, not the bot); empty for none.')
param administratorGroupObjectId string = ''

@description('Display name of that Entra group: the role its members log in as.')
param administratorGroupName string = ''

@description('Log Analytics workspace for the diagnostic settings.')
param workspaceId string

@description('Compute size, e.g. Standard_D2ds_v5 (General Purpose), Standard_B1ms (Burstable: no high availability).')
param skuName string = 'Standard_D2ds_v5'

@description('Compute tier of skuName.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string = 'GeneralPurpose'

@description('High availability: a standby in another availability zone (ZoneRedundant, not on Burstable) or none (Disabled).')
@allowed([
  'ZoneRedundant'
  'Disabled'
])
param highAvailabilityMode string = 'ZoneRedundant'

@description('Storage in GiB; grows by itself when nearly full (auto-grow). It cannot shrink.')
@allowed([
  32
  64
  128
  256
  512
  1024
  2048
  4096
  8192
  16384
  32767
])
param storageSizeGB int = 32

@description('Days of point-in-time restore (7-35).')
@minValue(7)
@maxValue(35)
param backupRetentionDays int = 35

@description('Also keep the backups in the paired region (westeurope: northeurope). Can only be chosen when the server is created.')
param geoRedundantBackup bool = true

@description('Name of the bot\'s database.')
param databaseName string = 'veilig_doorverwijzen'

param tags object = {}

// Server parameters, applied one at a time (the server accepts one change at a time).
// The bot sends client data only as bound statement parameters (and then only encrypted): the server log
// must never contain statements with their parameters, or the rows of a failing statement.
var serverParameters = [
  {
    name: 'require_secure_transport'
    value: 'on'
  }
  {
    name: 'ssl_min_protocol_version'
    value: 'TLSv1.2'
  }
  {
    name: 'log_connections'
    value: 'on'
  }
  {
    name: 'log_disconnections'
    value: 'on'
  }
  {
    name: 'connection_throttle.enable'
    value: 'on'
  }
  {
    // DDL only (schema migrations): no statement that carries data is logged.
    name: 'log_statement'
    value: 'ddl'
  }
  {
    // No slow-statement logging: it would log the statement with its bound parameters.
    name: 'log_min_duration_statement'
    value: '-1'
  }
  {
    name: 'log_parameter_max_length'
    value: '0'
  }
  {
    name: 'log_parameter_max_length_on_error'
    value: '0'
  }
  {
    // No STATEMENT line after an error; the bot's own log says which operation failed.
    name: 'log_min_error_statement'
    value: 'panic'
  }
  {
    // No DETAIL lines: a constraint violation's DETAIL quotes key values or the whole failing row.
    name: 'log_error_verbosity'
    value: 'terse'
  }
  {
    // Seconds between autovacuum's looks: the queue tables are vacuumed after 500 dead rows (revision
    // 0006), which under load is seconds; a claim's index scan visits every dead entry until then.
    name: 'autovacuum_naptime'
    value: '15'
  }
]

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: '16'
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenantId
    }
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: geoRedundantBackup ? 'Enabled' : 'Disabled'
    }
    highAvailability: {
      mode: highAvailabilityMode
    }
    network: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource appAdministrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (appIsAdministrator) {
  parent: server
  name: appPrincipalId
  properties: {
    principalName: appPrincipalName
    principalType: 'ServicePrincipal'
    tenantId: tenantId
  }
}

resource groupAdministrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(administratorGroupObjectId)) {
  parent: server
  name: administratorGroupObjectId
  properties: {
    principalName: administratorGroupName
    principalType: 'Group'
    tenantId: tenantId
  }
  dependsOn: [
    appAdministrator
  ]
}

@batchSize(1)
resource parameters 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = [for parameter in serverParameters: {
  parent: server
  name: parameter.name
  properties: {
    value: parameter.value
    source: 'user-override'
  }
  dependsOn: [
    appAdministrator
    groupAdministrator
  ]
}]

// "Allow public access from any Azure service within Azure to this server": App Service's outbound
// addresses are shared and change, so no narrower rule can name them. Every login still needs an Entra
// token for a role on this server, over TLS.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [
    parameters
  ]
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
  dependsOn: [
    allowAzure
  ]
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: server
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'PostgreSQLLogs'
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

output name string = server.name
output fqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
@description('DATABASE_URL for the bot: the identity\'s role, TLS with the server\'s certificate and host name verified, no password.')
output databaseUrl string = 'postgresql://${uriComponent(appPrincipalName)}@${server.properties.fullyQualifiedDomainName}:5432/${database.name}?sslmode=verify-full'
