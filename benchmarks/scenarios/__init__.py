"""One module per scenario: each has NAME, TITLE and run(ctx) -> {"rows": [...], ...}."""
