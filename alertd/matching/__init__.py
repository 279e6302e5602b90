"""Matching: the query language, document analysis, the match engine and the hits it records.

The rest of alertd imports matching from here; the modules behind it are its own business.
"""

from alertd.matching.analysis import (
    AnalysedDocument,
    Document,
    Highlights,
    Query,
    analyse,
    highlight_terms,
    parse_query,
)
from alertd.matching.engine import MatchEngine
from alertd.matching.history import matching_item_ids
from alertd.matching.hits import match_new_items
from alertd.matching.live import LiveMatcher
from alertd.matching.query import MemberFollow, followed_member, parse_canonical

__all__ = [
    "AnalysedDocument",
    "Document",
    "Highlights",
    "LiveMatcher",
    "MatchEngine",
    "MemberFollow",
    "Query",
    "analyse",
    "followed_member",
    "highlight_terms",
    "match_new_items",
    "matching_item_ids",
    "parse_canonical",
    "parse_query",
]
