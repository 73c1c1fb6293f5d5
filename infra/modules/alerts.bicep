// What wakes the operators: an action group mailing the ops mailbox, and an alert for each thing that
// hurts a referral before a social worker notices it (infra/README.md, *Operations*). The bot's own
// metrics (bot/core/metrics.py) come from Application Insights' customMetrics table; /readyz is probed
// from outside by an availability test. Every rule mails; none holds client data (the metrics carry
// protocol ids, causes and status codes only).

@description('Short name the alert names start with.')
param baseName string

@description('Azure region of the availability test.')
param location string

@description('Resource id of the Application Insights component the bot sends its telemetry to.')
param appInsightsId string

@description('Host name of the web app (e.g. <name>.azurewebsites.net), whose /readyz is probed.')
param webAppHostName string

@description('The operators\' mailbox that every alert is sent to.')
param opsMailbox string

@description('Minutes the oldest mail or Teams message may wait before it is an alert.')
param outboxMaxWaitMinutes int = 30

@description('Percentage of 5xx answers on /api/messages over 15 minutes that is an alert.')
param serverErrorPercent int = 5

@description('5xx answers on /api/messages over 15 minutes below which no alert is raised (one failed turn of two is no outage).')
param serverErrorMinimum int = 3

@description('503 answers on /api/messages over 15 minutes for want of the Bot Framework\'s signing keys below which no alert is raised (a fetch that failed once costs one request, which Teams sends again).')
param keysUnavailableMinimum int = 3

param tags object = {}

resource opsGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${baseName}-ops'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('vd-ops', 12)
    enabled: true
    emailReceivers: [
      {
        name: 'ops-mailbox'
        emailAddress: opsMailbox
        useCommonAlertSchema: true
      }
    ]
  }
}

var outboxQuery = '''
customMetrics
| where name == 'vd.outbox.oldest_age'
| extend outbox = tostring(customDimensions['outbox'])
| summarize oldestSeconds = max(value) by outbox
'''

var giveUpQuery = '''
customMetrics
| where name == 'vd.outbox.give_ups'
| extend outbox = tostring(customDimensions['outbox']), cause = tostring(customDimensions['cause'])
| summarize giveUps = sum(value) by outbox, cause
'''

var serverErrorQuery = replace('''
customMetrics
| where name == 'vd.http.responses' and tostring(customDimensions['http.route']) == '/api/messages'
| extend status = toint(customDimensions['http.response.status_code'])
| extend cause = tostring(customDimensions['cause'])
| summarize answered = sum(value), failed = sumif(value, status >= 500 and cause != 'signing_keys_unavailable')
| where failed >= {minimum}
| extend serverErrorPercent = 100.0 * failed / answered
''', '{minimum}', string(serverErrorMinimum))

var keyVaultQuery = '''
customMetrics
| where name == 'vd.keyvault.read.failures'
| extend cause = tostring(customDimensions['cause'])
| summarize failures = sum(value) by cause
'''

var authRefusedQuery = '''
customMetrics
| where name == 'vd.auth.refused'
| extend reason = tostring(customDimensions['reason'])
| summarize refused = sum(value) by reason
'''

// The 503s answered while the Bot Framework's signing keys cannot be fetched (Teams sends those requests again):
// the bot did not fail, so server-errors leaves them out and this rule counts them.
var keysUnavailableQuery = replace('''
customMetrics
| where name == 'vd.auth.unavailable'
| summarize unavailable = sum(value)
| where unavailable >= {minimum}
''', '{minimum}', string(keysUnavailableMinimum))

var queryAlerts = [
  {
    name: 'outbox-stuck'
    title: 'Mail or Teams message waiting too long'
    description: 'The oldest mail or Teams message in the outbox has waited more than ${outboxMaxWaitMinutes} minutes: the mail relay, Graph or Teams is refusing or unreachable. Runbook: infra/README.md, Operations.'
    severity: 1
    query: outboxQuery
    column: 'oldestSeconds'
    aggregation: 'Maximum'
    dimensions: [
      'outbox'
    ]
    threshold: outboxMaxWaitMinutes * 60
    window: 'PT15M'
  }
  {
    name: 'give-up'
    title: 'A mail or Teams message was given up on'
    description: 'The bot gave up on a mail (the referrer was told NIET verstuurd) or a Teams message. Runbook: infra/README.md, Operations.'
    severity: 1
    query: giveUpQuery
    column: 'giveUps'
    aggregation: 'Total'
    dimensions: [
      'outbox'
      'cause'
    ]
    threshold: 0
    window: 'PT5M'
  }
  {
    name: 'server-errors'
    title: '5xx answers on /api/messages'
    description: 'More than ${serverErrorPercent} % of the answers to Teams on /api/messages were 5xx (at least ${serverErrorMinimum}) in 15 minutes: users see errors.'
    severity: 1
    query: serverErrorQuery
    column: 'serverErrorPercent'
    aggregation: 'Maximum'
    dimensions: []
    threshold: serverErrorPercent
    window: 'PT15M'
  }
  {
    name: 'teams-refused'
    title: 'Teams requests refused (401)'
    description: 'The bot refused a request the Bot Framework itself signed: likely every Teams message and click is refused and users get no answer, while /readyz is fine. The log line "a request the Bot Framework signed was refused" says what to check (MicrosoftAppId, the clock). Runbook: infra/README.md, Operations.'
    severity: 1
    query: authRefusedQuery
    column: 'refused'
    aggregation: 'Total'
    dimensions: [
      'reason'
    ]
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'teams-keys-unavailable'
    title: 'Bot Framework signing keys cannot be fetched (503)'
    description: 'At least ${keysUnavailableMinimum} requests from Teams in 15 minutes were answered 503 because the Bot Framework\'s signing keys could not be fetched from login.botframework.com: Teams sends them again, and users wait or get no answer while it lasts. Not the bot\'s own failure: check the instance\'s outbound HTTPS to login.botframework.com (DNS, firewall, NAT) and Azure\'s status. Runbook: infra/README.md, Operations.'
    severity: 2
    query: keysUnavailableQuery
    column: 'unavailable'
    aggregation: 'Total'
    dimensions: []
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'key-vault-failures'
    title: 'Key Vault reads failing'
    description: 'Reading a ZIP password from Key Vault failed (denied, disabled, missing, throttled or unreachable): sends will fail once the cached password runs out. Runbook: infra/README.md, Operations.'
    severity: 2
    query: keyVaultQuery
    column: 'failures'
    aggregation: 'Total'
    dimensions: [
      'cause'
    ]
    threshold: 0
    window: 'PT5M'
  }
]

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in queryAlerts: {
  name: '${baseName}-${alert.name}'
  location: location
  tags: tags
  properties: {
    displayName: alert.title
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: alert.window
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: alert.aggregation
          metricMeasureColumn: alert.column
          dimensions: [for dimension in alert.dimensions: {
            name: dimension
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          operator: 'GreaterThan'
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        opsGroup.id
      ]
    }
  }
}]

// /readyz from outside, every 5 minutes from five European locations: storage, a protocol in force, its ZIP password.
resource readyProbe 'Microsoft.Insights/webtests@2022-06-15' = {
  name: '${baseName}-readyz'
  location: location
  tags: union(tags, {
    'hidden-link:${appInsightsId}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: '${baseName}-readyz'
    Name: '${baseName} /readyz'
    Description: 'The bot is ready for referrals: storage answers, a protocol is in force, its ZIP password can be read.'
    Enabled: true
    Frequency: 300
    Timeout: 30
    Kind: 'standard'
    RetryEnabled: true
    Locations: [
      {
        Id: 'emea-nl-ams-azr'
      }
      {
        Id: 'emea-gb-db3-azr'
      }
      {
        Id: 'emea-fr-pra-edge'
      }
      {
        Id: 'emea-ch-zrh-edge'
      }
      {
        Id: 'emea-se-sto-edge'
      }
    ]
    Request: {
      RequestUrl: 'https://${webAppHostName}/readyz'
      HttpVerb: 'GET'
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 14
    }
  }
}

resource readyAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${baseName}-readyz-failing'
  location: 'global'
  tags: tags
  properties: {
    description: '/readyz has failed from at least two locations for 5 minutes: referrals cannot be sent (see the checks in its answer). Runbook: infra/README.md, Operations.'
    severity: 1
    enabled: true
    scopes: [
      readyProbe.id
      appInsightsId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: readyProbe.id
      componentId: appInsightsId
      failedLocationCount: 2
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: opsGroup.id
      }
    ]
  }
}

output actionGroupId string = opsGroup.id
