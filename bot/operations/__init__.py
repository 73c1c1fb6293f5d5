"""What operators see: OpenTelemetry to Azure Monitor, its privacy gate, HTTP answer counts, a local /metrics.

Owns: telemetry's set-up and export. May import: config, router, oversight, ocmw, referral, delivery, evidence,
secrets, core, storage.
"""
