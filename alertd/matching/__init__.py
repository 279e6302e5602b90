"""Matching: the query language, document analysis, the match engine and the hits it records."""
