-- Group memberships of the sample CRM: one row per (person, CRM group).
-- Canonical columns: crm_id, group_key, erzycall_group_id (NULL = a CRM group never sent).
SELECT
    gm.person_id AS crm_id,
    g.group_key AS group_key,
    g.erzycall_group_id AS erzycall_group_id
FROM group_memberships gm
JOIN crm_groups g ON g.id = gm.group_id
ORDER BY gm.person_id, g.group_key;
