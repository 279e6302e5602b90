"""The alert query language: tokeniser, stemmer, immutable AST, parser and canonical form."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

from alertd.errors import QueryError
from alertd.kinds import KINDS
from alertd.kinds.kind import Role

MAX_QUERY_LENGTH = 500
MAX_TERMS = 32
MAX_DEPTH = 16
MIN_PREFIX = 3
# member: any Member of an item, in any role; each role (asker, answerer) is a field too.
MEMBER_FIELDS = ("member", *(role.value for role in Role))
ID_FIELDS = (*MEMBER_FIELDS, "department")
FIELDS = (*ID_FIELDS, "house", "heading", "type")
HOUSES = ("commons", "lords")
# What type: narrows an alert to: each kind's type name (question, statement).
TYPES = tuple(kind.type_name for kind in KINDS.values() if kind.type_name)

Scope: TypeAlias = Literal["text", "heading"]
Resolver: TypeAlias = Callable[[str, str, int], int]
"""resolve(field, name, position) -> id; raises QueryError for a name it does not know."""

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_NOT_WORD = re.compile(r"[\W_]+")
_FIELD = re.compile(r"([^\W\d_]+):")
_QUOTES = '"\u201c\u201d'
_DIGITS = re.compile(r"[0-9]{1,9}")

try:
    import Stemmer as _pystemmer

    def _new_stemmer() -> Any:
        return _pystemmer.Stemmer("english")

except ImportError:  # pragma: no cover - PyStemmer is a dependency; this is its fallback
    import snowballstemmer as _snowball

    def _new_stemmer() -> Any:
        return _snowball.stemmer("english")


_local = threading.local()


def stem_words(words: list[str]) -> list[str]:
    """English Snowball stems of lower-cased tokens (one stemmer per thread)."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = _new_stemmer()
    stems: list[str] = stemmer.stemWords(words)
    return stems


def normalise_token(raw: str) -> str:
    """One raw word as it is compared: lower-cased, possessive 's dropped, no punctuation."""
    low = raw.lower()
    if low.endswith(("'s", "\u2019s")):
        low = low[:-2]
    return _NOT_WORD.sub("", low)


def iter_tokens(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, token) of every word: runs of letters and digits, joined by apostrophes."""
    for found in _WORD.finditer(text):
        token = normalise_token(found.group())
        if token:
            yield found.start(), found.end(), token


class _Normalised(dict[str, str]):
    """Raw word -> `normalise_token` of it, remembered: the words of Parliament's texts are a
    small vocabulary, so nearly every word of a new text is a lookup, not a computation."""

    def __missing__(self, raw: str) -> str:
        if len(self) >= _NORMALISED_MAX:
            # A bound on memory for a long-lived daemon; the common words come back at once.
            self.clear()
        token = self[raw] = normalise_token(raw)
        return token


_NORMALISED_MAX = 200_000
# Shared by threads: a lookup or an insertion is one atomic dict operation.
_normalised = _Normalised()


def tokenize(text: str) -> list[str]:
    """The lower-cased, unstemmed tokens of a text ("covid-19" gives "covid", "19"): the
    tokens of `iter_tokens`, without their offsets."""
    tokens = list(map(_normalised.__getitem__, _WORD.findall(text)))
    if "" in tokens:
        return [token for token in tokens if token]
    return tokens


class Searchable(Protocol):
    """What the AST is evaluated against: an analysed document (see alertd.matching.analysis)."""

    def has_stem(self, stem: str, scope: Scope) -> bool: ...
    def has_prefix(self, prefix: str, scope: Scope) -> bool: ...
    def has_phrase(self, words: tuple[str, ...], scope: Scope) -> bool: ...
    def has_field(self, name: str, value: int | str) -> bool: ...


def _scoped(scope: Scope, text: str) -> str:
    return f"heading:{text}" if scope == "heading" else text


@dataclass(frozen=True, slots=True)
class Term:
    """A word, matched by its stem (`need` finds "needs")."""

    word: str
    scope: Scope = "text"
    stem: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem", stem_words([self.word])[0])

    positive = True

    def render(self) -> str:
        return _scoped(self.scope, self.word)

    def matches(self, doc: Searchable) -> bool:
        return doc.has_stem(self.stem, self.scope)


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words in this order, next to each other, compared unstemmed."""

    words: tuple[str, ...]
    scope: Scope = "text"

    positive = True

    def render(self) -> str:
        return _scoped(self.scope, '"' + " ".join(self.words) + '"')

    def matches(self, doc: Searchable) -> bool:
        return doc.has_phrase(self.words, self.scope)


@dataclass(frozen=True, slots=True)
class Prefix:
    """`educat*`: any unstemmed token starting with `prefix`."""

    prefix: str
    scope: Scope = "text"

    positive = True

    def render(self) -> str:
        return _scoped(self.scope, self.prefix + "*")

    def matches(self, doc: Searchable) -> bool:
        return doc.has_prefix(self.prefix, self.scope)


@dataclass(frozen=True, slots=True)
class Field:
    """A metadata condition: member/asker/answerer/department take an id, house a house,
    type an item type."""

    name: str
    value: int | str

    positive = True

    def render(self) -> str:
        return f"{self.name}:{self.value}"

    def matches(self, doc: Searchable) -> bool:
        return doc.has_field(self.name, self.value)


@dataclass(frozen=True, slots=True)
class And:
    """Every child matches; children are flattened, deduplicated and sorted (see make_and)."""

    children: tuple[Node, ...]

    @property
    def positive(self) -> bool:
        return any(child.positive for child in self.children)

    def render(self) -> str:
        return " ".join(
            f"({child.render()})" if isinstance(child, Or) else child.render()
            for child in self.children
        )

    def matches(self, doc: Searchable) -> bool:
        return all(child.matches(doc) for child in self.children)


@dataclass(frozen=True, slots=True)
class Or:
    """At least one child matches; children are flattened, deduplicated and sorted."""

    children: tuple[Node, ...]

    @property
    def positive(self) -> bool:
        return all(child.positive for child in self.children)

    def render(self) -> str:
        return " OR ".join(child.render() for child in self.children)

    def matches(self, doc: Searchable) -> bool:
        return any(child.matches(doc) for child in self.children)


@dataclass(frozen=True, slots=True)
class Not:
    """The child does not match."""

    child: Node

    positive = False

    def render(self) -> str:
        inner = self.child.render()
        return f"-({inner})" if isinstance(self.child, And | Or) else f"-{inner}"

    def matches(self, doc: Searchable) -> bool:
        return not self.child.matches(doc)


Leaf: TypeAlias = Term | Phrase | Prefix | Field
Node: TypeAlias = Term | Phrase | Prefix | Field | And | Or | Not


def _unique(children: list[Node], key: Callable[[Node], tuple[bool, str]]) -> tuple[Node, ...]:
    by_text = {child.render(): child for child in children}
    return tuple(sorted(by_text.values(), key=key))


def make_and(children: list[Node]) -> Node:
    """AND of the children: nested ANDs flattened, duplicates dropped, exclusions last."""
    flat: list[Node] = []
    for child in children:
        flat.extend(child.children if isinstance(child, And) else (child,))
    unique = _unique(flat, lambda c: (isinstance(c, Not), c.render()))
    return unique[0] if len(unique) == 1 else And(unique)


def make_or(children: list[Node]) -> Node:
    """OR of the children: nested ORs flattened, duplicates dropped, sorted."""
    flat: list[Node] = []
    for child in children:
        flat.extend(child.children if isinstance(child, Or) else (child,))
    unique = _unique(flat, lambda c: (False, c.render()))
    return unique[0] if len(unique) == 1 else Or(unique)


def walk(node: Node) -> Iterator[Node]:
    """Every node of a tree, parents before children."""
    yield node
    if isinstance(node, And | Or):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)


def positive_leaves(node: Node) -> Iterator[Leaf]:
    """The leaves that are not under a NOT: what makes a document match."""
    if isinstance(node, And | Or):
        for child in node.children:
            yield from positive_leaves(child)
    elif not isinstance(node, Not):
        yield node


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed alert query; equal queries share one `canonical` text."""

    root: Node
    canonical: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "canonical", self.root.render())

    def __str__(self) -> str:
        return self.canonical

    def matches(self, doc: Searchable) -> bool:
        return self.root.matches(doc)

    def nodes(self) -> Iterator[Node]:
        return walk(self.root)

    def positive_leaves(self) -> Iterator[Leaf]:
        return positive_leaves(self.root)


TokenKind: TypeAlias = Literal["(", ")", "OR", "AND", "NOT", "-", "leaf", "end"]
_OPERATORS: dict[str, TokenKind] = {"OR": "OR", "AND": "AND", "NOT": "NOT"}
_OPERAND_START = frozenset({"leaf", "(", "NOT", "-"})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: TokenKind
    position: int
    leaf: Leaf | None = None


def _ends_run(char: str) -> bool:
    return char.isspace() or char in "()" or char in _QUOTES


class _Lexer:
    """Splits query text into tokens lazily, so errors come out in reading order."""

    def __init__(self, text: str, resolve: Resolver | None) -> None:
        self.text = text
        self.resolve = resolve
        self.at = 0

    def next(self) -> _Token:
        while True:
            token = self._read()
            if token is not None:
                return token

    def _read(self) -> _Token | None:
        text, start = self.text, self._skip_space()
        if start >= len(text):
            return _Token("end", start)
        char = text[start]
        if char in "()":
            self.at += 1
            return _Token("(" if char == "(" else ")", start)
        if char in _QUOTES:
            words = tokenize(self._quoted())
            if not words:
                raise QueryError("empty phrase: put words between the quotes", start)
            return _Token("leaf", start, Phrase(tuple(words)))
        if char == "-" and self._has_value(start + 1):
            self.at += 1
            return _Token("-", start)
        return self._bare(start)

    def _skip_space(self) -> int:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1
        return self.at

    def _quoted(self) -> str:
        start = self.at
        for end in range(start + 1, len(self.text)):
            if self.text[end] in _QUOTES:
                self.at = end + 1
                return self.text[start + 1 : end]
        raise QueryError("unbalanced quote: this phrase is never closed", start)

    def _run(self) -> str:
        start = self.at
        while self.at < len(self.text) and not _ends_run(self.text[self.at]):
            self.at += 1
        return self.text[start : self.at]

    def _has_value(self, at: int) -> bool:
        """Something that can follow `-` or `field:` directly starts at `at`."""
        return at < len(self.text) and not self.text[at].isspace() and self.text[at] != ")"

    def _bare(self, start: int) -> _Token | None:
        found = _FIELD.match(self.text, start)
        if found is not None:
            name = found.group(1).lower()
            if name in FIELDS:
                self.at = found.end()
                return _Token("leaf", start, self._field(name, found.end()))
            if self._has_value(found.end()):
                raise QueryError(f"unknown field {name!r}: use one of {', '.join(FIELDS)}", start)
        run = self._run()
        if run in _OPERATORS:
            return _Token(_OPERATORS[run], start)
        leaf = _word_leaf(run, start, "text")
        return None if leaf is None else _Token("leaf", start, leaf)

    def _field(self, name: str, at: int) -> Leaf:
        if not self._has_value(at):
            raise QueryError(f"{name}: needs a value", at)
        quoted = self.text[at] in _QUOTES
        value = self._quoted() if quoted else self._run()
        if name == "heading":
            return _heading(value, quoted, at)
        if name == "house":
            house = value.strip().lower()
            if house not in HOUSES:
                raise QueryError("house: must be commons or lords", at)
            return Field(name, house)
        if name == "type":
            kind = value.strip().lower()
            if kind not in TYPES:
                raise QueryError(f"type: must be {' or '.join(TYPES)}", at)
            return Field(name, kind)
        return Field(name, self._id(name, value, at))

    def _id(self, name: str, value: str, at: int) -> int:
        value = " ".join(value.split())
        if _DIGITS.fullmatch(value) and int(value) > 0:
            return int(value)
        if not value or value.isdigit():
            raise QueryError(f"{name}: needs an id (a whole number from 1) or a name", at)
        if self.resolve is None:
            raise QueryError(f"{name}: names need resolving to an id, e.g. {name}:4138", at)
        return self.resolve(name, value, at)


def _word_leaf(run: str, at: int, scope: Scope) -> Leaf | None:
    """A bare word: a term, a phrase if punctuation splits it, a prefix if it ends in *."""
    if "*" in run:
        return _prefix(run, at, scope)
    words = tokenize(run)
    if not words:
        return None
    return Term(words[0], scope) if len(words) == 1 else Phrase(tuple(words), scope)


def _prefix(run: str, at: int, scope: Scope) -> Prefix:
    star = run.index("*")
    if star != len(run) - 1:
        raise QueryError("a wildcard * can only end a word", at + star)
    words = tokenize(run[:-1])
    if len(words) > 1:
        raise QueryError("a wildcard * applies to a single word", at)
    if not words or len(words[0]) < MIN_PREFIX:
        raise QueryError(f"a wildcard needs at least {MIN_PREFIX} letters before *", at)
    return Prefix(words[0], scope)


def _heading(value: str, quoted: bool, at: int) -> Leaf:
    if quoted:
        words = tokenize(value)
        leaf: Leaf | None = Phrase(tuple(words), "heading") if words else None
    else:
        leaf = _word_leaf(value, at, "heading")
    if leaf is None:
        raise QueryError("heading: needs a word or a phrase", at)
    return leaf


class _Parser:
    """Recursive descent: OR of ANDs of (NOT/-)* atoms; atoms are leaves or (groups)."""

    def __init__(self, text: str, resolve: Resolver | None) -> None:
        self.lexer = _Lexer(text, resolve)
        self.peek = self.lexer.next()
        self.terms = 0
        self.depth = 0

    def _take(self) -> _Token:
        token, self.peek = self.peek, self.lexer.next()
        return token

    def parse(self) -> Query:
        if self.peek.kind == "end":
            raise QueryError("empty query: give at least one word, phrase or field", 0)
        node, at = self._or()
        if self.peek.kind == ")":
            raise QueryError("unbalanced parenthesis: nothing opens this ')'", self.peek.position)
        if not node.positive:
            raise QueryError(
                "the query only excludes, so it would match everything: add a word to look for", at
            )
        return Query(node)

    def _or(self) -> tuple[Node, int]:
        node, at = self._and()
        parts = [(node, at)]
        while self.peek.kind == "OR":
            operator = self._take()
            if self.peek.kind not in _OPERAND_START:
                raise QueryError("OR needs something on both sides", operator.position)
            parts.append(self._and())
        if len(parts) > 1:
            for part, part_at in parts:
                if not part.positive:
                    raise QueryError("each side of OR needs a word to look for", part_at)
        return make_or([part for part, _ in parts]), at

    def _and(self) -> tuple[Node, int]:
        node, at = self._unary()
        children = [node]
        while self.peek.kind in _OPERAND_START or self.peek.kind == "AND":
            if self.peek.kind == "AND":
                operator = self._take()
                if self.peek.kind not in _OPERAND_START:
                    raise QueryError("AND needs something on both sides", operator.position)
            children.append(self._unary()[0])
        return make_and(children), at

    def _unary(self) -> tuple[Node, int]:
        if self.peek.kind not in ("NOT", "-"):
            return self._atom()
        operator = self._take()
        if self.peek.kind not in _OPERAND_START:
            raise QueryError(f"{operator.kind} needs something after it", operator.position)
        self._enter(operator.position)
        child, _ = self._unary()
        self.depth -= 1
        return Not(child), operator.position

    def _atom(self) -> tuple[Node, int]:
        token = self._take()
        if token.leaf is not None:
            self.terms += 1
            if self.terms > MAX_TERMS:
                raise QueryError(f"too many terms: at most {MAX_TERMS}", token.position)
            return token.leaf, token.position
        if token.kind == "(":
            return self._group(token.position), token.position
        if token.kind == ")":
            raise QueryError("unbalanced parenthesis: nothing opens this ')'", token.position)
        raise QueryError(f"{token.kind} needs something on both sides", token.position)

    def _group(self, at: int) -> Node:
        if self.peek.kind == ")":
            raise QueryError("empty parentheses", at)
        if self.peek.kind == "end":
            raise QueryError("unbalanced parenthesis: this '(' is never closed", at)
        self._enter(at)
        node, _ = self._or()
        self.depth -= 1
        if self._take().kind != ")":
            raise QueryError("unbalanced parenthesis: this '(' is never closed", at)
        return node

    def _enter(self, at: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"nested too deeply: at most {MAX_DEPTH} levels", at)


def parse_query(text: str, resolve: Resolver | None = None) -> Query:
    """Parse an alert query; names in member/asker/answerer/department go through `resolve`.

    Raises:
        QueryError: the query is malformed, too long, only excludes, or names are unresolved.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"query too long: at most {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH)
    return _Parser(text, resolve).parse()


# The atoms of a plain canonical query: words, prefixes, phrases (each maybe in the heading),
# id, house and type fields, maybe excluded; each ends at a space or the end.
_ATOM = (
    r'(-?)(?:(heading:)?(?:"([a-z0-9]+(?: [a-z0-9]+)*)"|([a-z0-9]+)(\*?))'
    rf"|({'|'.join(ID_FIELDS)}):([1-9][0-9]{{0,8}})|house:(commons|lords)"
    rf"|type:({'|'.join(TYPES)}))(?= |$)"
)
_ATOMS = re.compile(f"({_ATOM})")
_PLAIN_AND = re.compile(f"{_ATOM}(?: {_ATOM})*")


class PlainAtom(NamedTuple):
    """One leaf of a plain canonical query, maybe excluded."""

    excluded: bool
    kind: Literal["word", "prefix", "phrase", "field"]
    scope: Scope
    # The word or prefix; a phrase's words, a space between them; a field's name.
    text: str
    # A field's value (an id, a house, or an item type).
    field_value: int | str | None = None


def plain_parts(canonical: str) -> list[list[PlainAtom]] | None:
    """A canonical query that is an OR of ANDs of atoms (the common shapes), as its parts'
    atoms, deduplicated and in make_and's / make_or's order; None when it needs the parser
    (groups, other words than [a-z0-9], anything the parser would refuse or reorder)."""
    if len(canonical) > MAX_QUERY_LENGTH:
        return None
    texts = canonical.split(" OR ")
    parts: list[list[PlainAtom]] = []
    terms = 0
    for text in texts:
        if _PLAIN_AND.fullmatch(text) is None:
            return None
        found = _ATOMS.findall(text)
        terms += len(found)
        if terms > MAX_TERMS:
            return None
        ordered = sorted({atom[0]: atom for atom in found}.values(), key=_atom_order)
        if len(texts) > 1 and [atom[0] for atom in ordered] != [atom[0] for atom in found]:
            return None  # its text is not its render: make_or might order it elsewhere
        atoms = [_plain_atom(groups) for groups in ordered]
        if None in atoms or atoms[0] is None or atoms[0].excluded:
            return None  # a short prefix, or nothing to look for: the parser says why
        parts.append([atom for atom in atoms if atom is not None])
    if any(before >= after for before, after in zip(texts, texts[1:], strict=False)):
        return None
    return parts


def _atom_order(groups: tuple[str, ...]) -> tuple[bool, str]:
    return groups[1] == "-", groups[0]


def _plain_atom(groups: tuple[str, ...]) -> PlainAtom | None:
    _, minus, heading, phrase, word, star, name, number, house, kind = groups
    excluded = minus == "-"
    scope: Scope = "heading" if heading else "text"
    if phrase:
        return PlainAtom(excluded, "phrase", scope, phrase)
    if word:
        if not star:
            return PlainAtom(excluded, "word", scope, word)
        if len(word) < MIN_PREFIX:
            return None
        return PlainAtom(excluded, "prefix", scope, word)
    if name:
        return PlainAtom(excluded, "field", "text", name, int(number))
    if kind:
        return PlainAtom(excluded, "field", "text", "type", kind)
    return PlainAtom(excluded, "field", "text", "house", house)


def plain_leaf(atom: PlainAtom) -> Leaf:
    """The query tree's leaf for an atom (without its exclusion)."""
    if atom.kind == "word":
        return Term(atom.text, atom.scope)
    if atom.kind == "prefix":
        return Prefix(atom.text, atom.scope)
    if atom.kind == "phrase":
        return Phrase(tuple(atom.text.split(" ")), atom.scope)
    assert atom.field_value is not None
    return Field(atom.text, atom.field_value)


def parse_canonical(canonical: str) -> Query:
    """Parse a stored canonical form: the same Query as `parse_query`, made directly for the
    common shapes (a daemon parses every distinct alert query at start), else by the parser.

    Raises:
        QueryError: as `parse_query`.
    """
    parts = plain_parts(canonical)
    if parts is None:
        return parse_query(canonical)
    ands: list[Node] = []
    for atoms in parts:
        children: list[Node] = [
            Not(plain_leaf(atom)) if atom.excluded else plain_leaf(atom) for atom in atoms
        ]
        # Deduplicated and in make_and's order already: the AND is made as it stands.
        ands.append(children[0] if len(children) == 1 else And(tuple(children)))
    return Query(ands[0] if len(ands) == 1 else Or(tuple(ands)))


class MemberFollow(NamedTuple):
    """A query that follows one Member and nothing else: how (member, asker or answerer)."""

    field: str
    member_id: int


@functools.lru_cache(maxsize=4096)
def followed_member(canonical: str) -> MemberFollow | None:
    """The Member a canonical query follows, when the query is that one field alone
    (member:ID, asker:ID or answerer:ID); None for any other query, and for one that no
    longer parses (a digest still goes out for it)."""
    try:
        root = parse_canonical(canonical).root
    except QueryError:
        return None
    if not isinstance(root, Field) or not isinstance(root.value, int):
        return None
    for name in MEMBER_FIELDS:
        if root.name == name:
            return MemberFollow(name, root.value)
    return None
