"""EVA, supervisory control: policy tiers, approvals, execution grants, audit chain."""
