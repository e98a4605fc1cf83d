"""The splits a study report can read, and what its first line calls each: one owner for the study file's
``split:``, ``seqcl study report --split``, ``seqcl compare --split`` and the report's title. No imports, so
that the CLI can build its options without loading the study machinery."""

#: split → the report's title for it ("test" is the protocol the runs were configured with).
SPLIT_TITLES = {
    "test": "Test split",
    "valid": "Valid split",
    "test_history_excluded": "Test split, the user's full history excluded from the ranking (seqcl's default)",
    "test_history_kept": "Test split, the user's history kept in the ranking (RecBole's protocol)",
}
REPORT_SPLITS = tuple(SPLIT_TITLES)
