"""The demo's public constants: the sandbox's key and the sample CRM's groups.

Both the sandbox (which accepts the key and preloads the groups) and the production side (the
settings' demo defaults, the sample CRM) need them; neither should import the other for that.
The key is deliberately public: it only ever opens the local sandbox.
"""

from __future__ import annotations

DEMO_API_KEY = "ek_test_sandbox_demo_key_0001"

#: Contact groups of the sample CRM, as (id, name). Preloaded because the real API only lists
#: groups; they are created in the ErzyCall dashboard.
DEMO_GROUPS: tuple[tuple[str, str], ...] = (
    ("grp_vip", "VIP"),
    ("grp_newsletter", "Newsletter"),
    ("grp_churn_risk", "Churn risk"),
    ("grp_trial", "Trial users"),
    ("grp_enterprise", "Enterprise"),
    ("grp_partners", "Partners"),
    ("grp_events", "Events 2026"),
)
