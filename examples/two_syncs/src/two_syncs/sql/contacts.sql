-- Contacts of the sample CRM (erzy_pipelines.crm.seed), one row per person.
-- Canonical columns: crm_id, title, phone (required); email, notes, tags, country, updated_at
-- (optional); custom_<name> becomes the ErzyCall custom field <name>.
-- Portable across SQLite, PostgreSQL and MariaDB: no ||, no boolean literals, no string_agg.
-- The derived table picks one primary number per person even if a CRM user ticked two.
SELECT
    p.id AS crm_id,
    p.display_name AS title,
    pn.number AS phone,
    p.email AS email,
    p.notes AS notes,
    p.tags AS tags,
    p.country AS country,
    p.updated_at AS updated_at,
    c.name AS custom_company
FROM people p
LEFT JOIN (
    SELECT person_id, MIN(id) AS phone_id
    FROM phone_numbers
    WHERE is_primary = 1
    GROUP BY person_id
) pp ON pp.person_id = p.id
LEFT JOIN phone_numbers pn ON pn.id = pp.phone_id
LEFT JOIN companies c ON c.id = p.company_id
ORDER BY p.id;
