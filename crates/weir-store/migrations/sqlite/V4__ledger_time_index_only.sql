-- Every call writes one ledger row and reports read them rarely: each index on a filter
-- column cost a B-tree descent per row, together more than the row itself. The time index
-- alone serves every report and budget total (they read the rows of their time range and
-- filter them), and rows older than the retention's roll-up age become daily totals.
DROP INDEX weir_ledger_key_at;
DROP INDEX weir_ledger_user_at;
DROP INDEX weir_ledger_team_at;
DROP INDEX weir_ledger_project_at;
DROP INDEX weir_ledger_model_at;
DROP INDEX weir_ledger_provider_at;
