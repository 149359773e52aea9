"""Going live: what revdaemon needs in Salesforce, checked against the org, created, or exported."""
