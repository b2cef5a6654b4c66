"""What EVA, OpenClaw, the gateway, the gates and the CLI agree on about actions.

One library, so the two sides of every check use the same definition:

    tools          the tools as data: names, tiers, argument schemas, `check_args`
    policy         the policy files: tool tiers, the command allowlist, forbidden roots
    commands       argv -> `CommandPlan` through the allowlist (EVA plans, OpenClaw re-plans)
    plan           the canonical plan (RFC 8785) and its hash
    grants         Ed25519 grants bound to a plan hash: EVA signs, OpenClaw verifies
    grant_ledger   single use of a grant (and of an action id) at the executor
    audit          the hash-chained audit log and its verification

Services share only this and `sonia.kit`, and talk to each other over HTTP.
"""
