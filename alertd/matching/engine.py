"""The match engine: distinct queries filed under a selective anchor, verified exactly per batch."""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import attrgetter
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar

from alertd.matching.analysis import AnalysedDocument
from alertd.matching.query import (
    And,
    Field,
    Node,
    Not,
    Or,
    Phrase,
    PlainAtom,
    Prefix,
    Query,
    Scope,
    Term,
    parse_canonical,
    plain_parts,
    stem_words,
)

__all__ = ["Grouped", "MatchEngine", "Mask", "indexes_of"]

K = TypeVar("K", bound=Hashable)

Key: TypeAlias = tuple[str, Hashable]
"""(space, value) of something a document contains; spaces are below."""
Mask: TypeAlias = int
"""A set of the documents of a batch: bit i is document i."""

STEM, HEADING_STEM = "s", "hs"
TOKEN, HEADING_TOKEN = "t", "ht"
PREFIX, HEADING_PREFIX = "p", "hp"
FIELD = "f"
_PREFIX_TOKENS = {PREFIX: TOKEN, HEADING_PREFIX: HEADING_TOKEN}

# Share of recorded written questions (tests/fixtures, 1,993 of 2021 and 2024) containing each
# stem, bucketed: a prior for how many documents a word anchors, used to pick the rarest.
_DF_BUCKETS = {
    0.5: "the to ask of and for state secretari in a what on is govern",
    0.2: "has with depart will are that have he this by made b as be uk we assess her plan work "
    "an take from support provid",
    0.1: "includ step she his it not servic their at health whether how which if local social "
    "they care publish 19 nation been ensur year communiti peopl develop our covid make all "
    "public potenti affair home 2024 commit coronavirus hous majesti 1 or set mani fund number "
    "can out who educ england",
    0.05: "2020 busi avail continu chancellor use author other offic had under discuss foreign new "
    "januari review need minist data 2021 report pension i respons was secur polici help when "
    "current impact inform exchequ through recent each access energi commonwealth 2 requir those "
    "no level there receiv financi c these juli across follow sector scheme refer issu dure "
    "effect sinc industri meet relat were protect ani deliv merit time improv place increas cost "
    "food answer oper 2023 up right strategi over further million school transport decis "
    "environ where question close last nhs estim chang into due part rural about employ such "
    "area programm reduc propos payment announc within children more constitu independ",
}
_STEM_SHARE = {stem: share for share, stems in _DF_BUCKETS.items() for stem in stems.split()}
_RARE_STEM = 0.01
_HEADING_SHARE = 0.3
_FIELD_SHARE = {"house": 0.5, "type": 0.5, "member": 0.004}
_ID_FIELD_SHARE = 0.002
_NEVER = float("inf")


def _stem_share(stem: str, heading: bool) -> float:
    share = _STEM_SHARE.get(stem, _RARE_STEM)
    return share * _HEADING_SHARE if heading else share


def _prefix_share(prefix: str, heading: bool) -> float:
    share = 0.2 if len(prefix) <= 3 else 0.1 if len(prefix) == 4 else 0.05
    return share * _HEADING_SHARE if heading else share


# --- the batch index: what the documents of one batch contain, by space -------------------


def _field_keys(doc: AnalysedDocument) -> Iterator[tuple[str, int | str]]:
    source = doc.document
    for member in source.member_ids():
        yield "member", member
    # Each (role, Member): asker, answerer.
    yield from set(source.members)
    if source.department_id is not None:
        yield "department", source.department_id
    if source.item_type:
        yield "type", source.item_type
    yield "house", doc.house


_CONTENTS: dict[str, Callable[[AnalysedDocument], Iterable[Hashable]]] = {
    STEM: lambda doc: doc.stems,
    HEADING_STEM: lambda doc: doc.heading_stems,
    TOKEN: lambda doc: doc.tokens,
    HEADING_TOKEN: lambda doc: doc.heading_tokens,
    FIELD: _field_keys,
}
# Above this many documents a mask is built in a bytearray (each `|=` on a long int copies it).
_BYTEWISE_FROM = 512


def mask_of(indexes: Iterable[int], size: int) -> Mask:
    """The mask with the bits of `indexes` set (documents of a batch of `size`)."""
    mask = 0
    if size < _BYTEWISE_FROM:
        for index in indexes:
            mask |= 1 << index
        return mask
    packed = bytearray((size + 7) // 8)
    for index in indexes:
        packed[index >> 3] |= 1 << (index & 7)
    return int.from_bytes(packed, "little")


def indexes_of(mask: Mask) -> list[int]:
    """The set bits of a mask, ascending."""
    if mask.bit_count() * 16 >= mask.bit_length():
        return [index for index, bit in enumerate(bin(mask)[:1:-1]) if bit == "1"]
    found: list[int] = []
    while mask:
        low = mask & -mask
        found.append(low.bit_length() - 1)
        mask ^= low
    return found


class _Masks(dict[Key, Mask]):
    """Key -> mask of the batch's documents containing it, made on first lookup."""

    def __init__(self, batch: _Batch) -> None:
        super().__init__()
        self.batch = batch

    def __missing__(self, key: Key) -> Mask:
        found = self[key] = self.batch.mask(key)
        return found


class _Batch:
    """Posting lists of one batch of documents, built per space on first use, and a mask
    (an int, bit i for document i) per key the queries ask about."""

    def __init__(self, docs: Sequence[AnalysedDocument]) -> None:
        self.docs = docs
        self.size = len(docs)
        self.universe: Mask = (1 << len(docs)) - 1
        self.masks = _Masks(self)
        self._postings: dict[str, dict[Hashable, list[int]]] = {}
        self._vocabulary: dict[str, list[str]] = {}
        self._phrases: dict[tuple[tuple[str, ...], bool], Mask] = {}

    def postings(self, space: str) -> dict[Hashable, list[int]]:
        """Value -> sorted indexes of the documents containing it, for one space."""
        found = self._postings.get(space)
        if found is None:
            grouped: defaultdict[Hashable, list[int]] = defaultdict(list)
            contents = _CONTENTS[space]
            for index, doc in enumerate(self.docs):
                for value in contents(doc):
                    grouped[value].append(index)
            found = self._postings[space] = dict(grouped)
        return found

    def vocabulary(self, space: str) -> list[str]:
        """The sorted distinct tokens of the batch (space TOKEN or HEADING_TOKEN)."""
        found = self._vocabulary.get(space)
        if found is None:
            found = self._vocabulary[space] = sorted(str(token) for token in self.postings(space))
        return found

    def present(self, space: str, wanted: Mapping[Hashable, object]) -> Iterable[Hashable]:
        """The values of `wanted` that some document of the batch contains."""
        if space in _PREFIX_TOKENS:
            return self._present_prefixes(space, wanted)
        return self.postings(space).keys() & wanted.keys()

    def _present_prefixes(self, space: str, wanted: Mapping[Hashable, object]) -> set[Hashable]:
        vocabulary = self.vocabulary(_PREFIX_TOKENS[space])
        if len(wanted) <= len(vocabulary):
            return {prefix for prefix in wanted if _has_prefix(vocabulary, str(prefix))}
        lengths = sorted({len(str(prefix)) for prefix in wanted})
        return {
            token[:size]
            for token in vocabulary
            for size in lengths
            if size <= len(token) and token[:size] in wanted
        }

    def mask(self, key: Key) -> Mask:
        """The documents containing a stem, token, prefix or field value (use `masks`)."""
        space, value = key
        if space in _PREFIX_TOKENS:
            return self._prefixed(_PREFIX_TOKENS[space], str(value))
        return mask_of(self.postings(space).get(value, ()), self.size)

    def _prefixed(self, space: str, prefix: str) -> Mask:
        vocabulary, masks = self.vocabulary(space), self.masks
        found = 0
        at = bisect_left(vocabulary, prefix)
        while at < len(vocabulary) and vocabulary[at].startswith(prefix):
            found |= masks[space, vocabulary[at]]
            at += 1
        return found

    def docs_with_phrase(self, words: tuple[str, ...], heading: bool) -> Mask:
        """The documents containing every word of a phrase, next to each other, in order."""
        found = self._phrases.get((words, heading))
        if found is None:
            space = HEADING_TOKEN if heading else TOKEN
            masks = self.masks
            candidates = self.universe
            for word in words:
                candidates &= masks[space, word]
            scope: Scope = "heading" if heading else "text"
            docs = self.docs
            found = mask_of(
                (i for i in indexes_of(candidates) if docs[i].has_phrase(words, scope)), self.size
            )
            self._phrases[(words, heading)] = found
        return found


def _has_prefix(vocabulary: list[str], prefix: str) -> bool:
    at = bisect_left(vocabulary, prefix)
    return at < len(vocabulary) and vocabulary[at].startswith(prefix)


# --- plans: a query compiled for set-at-a-time evaluation over a batch ---------------------


class _Plan(ABC):
    """A compiled node: `evaluate` gives the documents (of `within`, or all) it matches."""

    __slots__ = ()

    @abstractmethod
    def evaluate(self, batch: _Batch, within: Mask | None) -> Mask: ...


class _Contains(_Plan):
    """A term, prefix, one-word phrase or field: the documents containing one key."""

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def evaluate(self, batch: _Batch, within: Mask | None) -> Mask:
        found = batch.masks[self.key]
        return found if within is None else within & found


class _Phrase(_Plan):
    __slots__ = ("heading", "words")

    def __init__(self, words: tuple[str, ...], heading: bool) -> None:
        self.words = words
        self.heading = heading

    def evaluate(self, batch: _Batch, within: Mask | None) -> Mask:
        found = batch.docs_with_phrase(self.words, self.heading)
        return found if within is None else within & found


class _All(_Plan):
    """AND: required keys rarest first, then other children, then excluded keys.

    Each step narrows the documents left; it stops as soon as none are.
    """

    __slots__ = ("excluded", "required", "rest")

    def __init__(
        self, required: tuple[Key, ...], rest: tuple[_Plan, ...], excluded: tuple[Key, ...]
    ) -> None:
        self.required = required
        self.rest = rest
        self.excluded = excluded

    def evaluate(self, batch: _Batch, within: Mask | None) -> Mask:
        masks = batch.masks
        for key in self.required:
            found = masks[key]
            within = found if within is None else within & found
            if not within:
                return within
        for child in self.rest:
            within = child.evaluate(batch, within)
            if not within:
                return within
        if within is None:
            within = batch.universe
        for key in self.excluded:
            within &= ~masks[key]
        return within


class _Any(_Plan):
    __slots__ = ("children", "keys")

    def __init__(self, children: tuple[_Plan, ...]) -> None:
        self.children = children
        # An OR of keys alone (the common "a OR b"): their masks joined, no step per child.
        self.keys = (
            tuple(child.key for child in children if isinstance(child, _Contains))
            if all(isinstance(child, _Contains) for child in children)
            else None
        )

    def evaluate(self, batch: _Batch, within: Mask | None) -> Mask:
        found = 0
        if self.keys is not None:
            masks = batch.masks
            for key in self.keys:
                found |= masks[key]
            return found if within is None else within & found
        for child in self.children:
            found |= child.evaluate(batch, within)
        return found


class _Without(_Plan):
    __slots__ = ("child",)

    def __init__(self, child: _Plan) -> None:
        self.child = child

    def evaluate(self, batch: _Batch, within: Mask | None) -> Mask:
        base = batch.universe if within is None else within
        return base & ~self.child.evaluate(batch, base)


class _Compiled(NamedTuple):
    """A plan, and anchors: keys one of which every document the node matches contains.

    `anchors` is None when there are none (an exclusion); `share` estimates the fraction of
    documents that contain one of the anchors, so the rarest can be chosen.
    """

    plan: _Plan
    anchors: tuple[Key, ...] | None
    share: float


_share_of = attrgetter("share")


class _Compiler:
    """Compiles query trees to plans, sharing one plan per distinct key (kept once made)."""

    def __init__(self) -> None:
        self._contains: dict[Key, _Contains] = {}
        self._stems: dict[str, str] = {}

    def compile_canonical(self, canonical: str) -> _Compiled:
        """Compile a stored canonical form: exactly `compile(parse_canonical(c).root)`, but the
        common shapes (an OR of ANDs of words, prefixes, phrases, fields) go straight to
        their plan without the query tree, words stemmed once per engine (a daemon's start).

        Raises:
            QueryError: as `parse_canonical`.
        """
        parts = plain_parts(canonical)
        if parts is None:
            return self.compile(parse_canonical(canonical).root)
        compiled = [self._plain_and(atoms) for atoms in parts]
        return compiled[0] if len(compiled) == 1 else self._or(compiled)

    def _plain_and(self, atoms: list[PlainAtom]) -> _Compiled:
        children = [self._plain_atom(atom) for atom in atoms]
        return children[0] if len(children) == 1 else self._and(children)

    def _plain_atom(self, atom: PlainAtom) -> _Compiled:
        if atom.excluded:
            return _Compiled(
                _Without(self._plain_atom(atom._replace(excluded=False)).plan), None, _NEVER
            )
        heading = atom.scope == "heading"
        if atom.kind == "word":
            stem = self._stem(atom.text)
            space = HEADING_STEM if heading else STEM
            return self._leaf((space, stem), _stem_share(stem, heading))
        if atom.kind == "prefix":
            space = HEADING_PREFIX if heading else PREFIX
            return self._leaf((space, atom.text), _prefix_share(atom.text, heading))
        if atom.kind == "phrase":
            return self._phrase(Phrase(tuple(atom.text.split(" ")), atom.scope))
        assert atom.field_value is not None
        return self._leaf(*_leaf_key(Field(atom.text, atom.field_value)))

    def _stem(self, word: str) -> str:
        stem = self._stems.get(word)
        if stem is None:
            stem = self._stems[word] = stem_words([word])[0]
        return stem

    def compile(self, node: Node) -> _Compiled:
        if isinstance(node, And):
            return self._and([self.compile(child) for child in node.children])
        if isinstance(node, Or):
            return self._or([self.compile(child) for child in node.children])
        if isinstance(node, Not):
            return _Compiled(_Without(self.compile(node.child).plan), None, _NEVER)
        if isinstance(node, Phrase):
            return self._phrase(node)
        return self._leaf(*_leaf_key(node))

    def _leaf(self, key: Key, share: float) -> _Compiled:
        plan = self._contains.get(key)
        if plan is None:
            plan = self._contains[key] = _Contains(key)
        return _Compiled(plan, (key,), share)

    def _phrase(self, node: Phrase) -> _Compiled:
        heading = node.scope == "heading"
        space = HEADING_TOKEN if heading else TOKEN
        shares = [_stem_share(self._stem(word), heading) for word in node.words]
        share, rarest = min(zip(shares, node.words, strict=True), default=(_NEVER, ""))
        if len(node.words) == 1:
            return self._leaf((space, rarest), share)
        return _Compiled(_Phrase(node.words, heading), ((space, rarest),), share)

    @staticmethod
    def _and(children: list[_Compiled]) -> _Compiled:
        # One pass (a daemon's start compiles hundreds of thousands of these).
        required: list[Key] = []
        rest: list[_Plan] = []
        excluded: list[Key] = []
        anchored: _Compiled | None = None
        for child in sorted(children, key=_share_of):
            plan = child.plan
            if type(plan) is _Contains:
                required.append(plan.key)
            elif type(plan) is _Without and type(plan.child) is _Contains:
                excluded.append(plan.child.key)
            else:
                rest.append(plan)
            if anchored is None and child.anchors is not None:
                anchored = child
        plan = _All(tuple(required), tuple(rest), tuple(excluded))
        if anchored is None:
            return _Compiled(plan, None, _NEVER)
        return _Compiled(plan, anchored.anchors, anchored.share)

    @staticmethod
    def _or(children: list[_Compiled]) -> _Compiled:
        plan = _Any(tuple(child.plan for child in children))
        anchors: dict[Key, None] = {}
        for child in children:
            if child.anchors is None:
                return _Compiled(plan, None, _NEVER)
            anchors.update(dict.fromkeys(child.anchors))
        return _Compiled(plan, tuple(anchors), min(1.0, sum(child.share for child in children)))


def _only_excluding(plan: _Plan, anchor: Key) -> Key | None:
    """The excluded key of an AND that is just `anchor` without one other key, else None."""
    if type(plan) is _All and len(plan.excluded) == 1 and plan.required == (anchor,):
        return None if plan.rest else plan.excluded[0]
    return None


def _second_key(plan: _Plan, anchor: Key) -> Key | None:
    """A key other than `anchor` that every document an AND matches contains, else None:
    its rarest other required key, or a word of a phrase it requires."""
    if type(plan) is not _All:
        return None
    for key in plan.required:
        if key != anchor:
            return key
    for child in plan.rest:
        if isinstance(child, _Phrase):
            space = HEADING_TOKEN if child.heading else TOKEN
            for word in child.words:
                if (space, word) != anchor:
                    return space, word
    return None


def _leaves(by_space: Mapping[str, Mapping[Hashable, Mapping[K, object]]]) -> dict[K, None]:
    """The keys filed in a two-level structure (space -> value -> keys)."""
    return {
        key: None for by_value in by_space.values() for keys in by_value.values() for key in keys
    }


class Grouped(NamedTuple, Generic[K]):
    """What `MatchEngine.match_groups` finds: a mask per query, and groups sharing one."""

    each: dict[K, Mask]
    shared: list[tuple[Mask, Iterable[K]]]


def _match_excluding(
    batch: _Batch,
    anchor: Mask,
    by_space: dict[str, dict[Hashable, dict[K, None]]],
    found: dict[K, Mask],
    share: Callable[[tuple[Mask, Iterable[K]]], None],
) -> None:
    masks = batch.masks
    for space, by_excluded in by_space.items():
        present = batch.present(space, by_excluded)
        # Every query whose excluded key no document of the batch has: the anchor's mask.
        lacking = by_excluded.keys() - present
        if lacking:
            share((anchor, list(chain.from_iterable(map(by_excluded.__getitem__, lacking)))))
        for value in present:
            mask = anchor & ~masks[space, value]
            if mask:
                for key in by_excluded[value]:
                    found[key] = mask


def _match_paired(
    batch: _Batch,
    anchor: Mask,
    by_space: dict[str, dict[Hashable, dict[K, _Plan | None]]],
    found: dict[K, Mask],
) -> None:
    masks = batch.masks
    for space, by_second in by_space.items():
        for value in batch.present(space, by_second):
            within = anchor & masks[space, value]
            if not within:
                continue
            for key, plan in by_second[value].items():
                mask = within if plan is None else plan.evaluate(batch, within)
                if mask:
                    found[key] = mask


def _nested(top: dict[Any, Any], path: tuple[Hashable, ...]) -> dict[Any, Any]:
    """The dict under `path` in nested dicts, made (and the dicts on the way) if missing."""
    for step in path:
        below = top.get(step)
        if below is None:
            below = top[step] = {}
        top = below
    return top


def _unfile(top: dict[Any, Any], path: tuple[Hashable, ...], key: object) -> None:
    """Remove `key` from the nested dicts under `path`, and every dict that leaves empty."""
    if not path:
        del top[key]
        return
    below = top[path[0]]
    _unfile(below, path[1:], key)
    if not below:
        del top[path[0]]


def _leaf_key(node: Term | Prefix | Field) -> tuple[Key, float]:
    if isinstance(node, Term):
        heading = node.scope == "heading"
        return (HEADING_STEM if heading else STEM, node.stem), _stem_share(node.stem, heading)
    if isinstance(node, Prefix):
        heading = node.scope == "heading"
        space = HEADING_PREFIX if heading else PREFIX
        return (space, node.prefix), _prefix_share(node.prefix, heading)
    share = _FIELD_SHARE.get(node.name, _ID_FIELD_SHARE)
    return (FIELD, (node.name, node.value)), share


# --- the engine ------------------------------------------------------------------------------


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building acyclic structures in bulk.

    Hundreds of thousands of allocations would otherwise trigger full collections that scan
    every live object (the alerts' query trees included) again and again.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class MatchEngine(Generic[K]):
    """Distinct queries by key, each filed under anchors that any document it matches contains.

    `match` indexes a batch of documents, takes the queries filed under something the batch
    contains (plus the few with no anchor), and evaluates each of those once over the whole
    batch with operations on masks (an int per key, a bit per document). The results are
    exactly those of `match_batch`.
    """

    def __init__(self, queries: Mapping[K, Query] | None = None) -> None:
        self._compiler = _Compiler()
        self._plans: dict[K, _Plan] = {}
        # Where each query is filed (a structure below and its paths), to remove it.
        self._places: dict[K, tuple[dict[Any, Any], tuple[tuple[Hashable, ...], ...]]] = {}
        # space -> value -> queries that are that one key: their result is that key's mask,
        # with no work per query.
        self._single: dict[str, dict[Hashable, dict[K, None]]] = {}
        # Queries with one anchor: space -> value -> {key: plan}.
        self._filed: dict[str, dict[Hashable, dict[K, _Plan]]] = {}
        # ANDs filed under their anchor, then under a second key they require (space, value):
        # a query is evaluated only when the batch holds both. None for a plan that is just
        # the two keys (its result is the two masks' intersection).
        self._paired: dict[str, dict[Hashable, dict[str, dict[Hashable, dict[K, _Plan | None]]]]]
        self._paired = {}
        # One key without another ("a -b"), under the anchor a, then the excluded b: while the
        # batch lacks b, every such query's result is a's mask (one result for all of them).
        self._excluding: dict[str, dict[Hashable, dict[str, dict[Hashable, dict[K, None]]]]] = {}
        # Queries with several anchors (an OR): gathered first, since a batch can contain more
        # than one of their anchors.
        self._filed_often: dict[str, dict[Hashable, dict[K, _Plan]]] = {}
        self._unanchored: dict[K, _Plan] = {}
        with _collector_paused():
            for key, query in (queries or {}).items():
                self.add(key, query)

    def __len__(self) -> int:
        return len(self._plans)

    def __contains__(self, key: object) -> bool:
        return key in self._plans

    def add(self, key: K, query: Query) -> None:
        """Add a query under `key` (replacing any query already under it)."""
        self._file(key, self._compiler.compile(query.root))

    def add_canonical(self, key: K, canonical: str) -> None:
        """Add a query by its canonical form (parsed as `parse_canonical` does, faster).

        Raises:
            QueryError: the canonical form does not parse.
        """
        self._file(key, self._compiler.compile_canonical(canonical))

    def _file(self, key: K, compiled: _Compiled) -> None:
        if key in self._plans:
            self.remove(key)
        plan, anchors, _ = compiled
        self._plans[key] = plan
        top: dict[Any, Any]
        path: tuple[Hashable, ...]
        value: object = plan
        if anchors is None:
            self._unanchored[key] = plan
            self._places[key] = (self._unanchored, ((),))
            return
        if len(anchors) != 1:
            top = self._filed_often
            for path in anchors:
                _nested(top, path)[key] = plan
            self._places[key] = (top, anchors)
            return
        anchor = anchors[0]
        if type(plan) is _Contains:
            top, path, value = self._single, anchor, None
        elif (excluded := _only_excluding(plan, anchor)) is not None:
            top, path, value = self._excluding, (*anchor, *excluded), None
        elif (second := _second_key(plan, anchor)) is not None:
            top, path = self._paired, (*anchor, *second)
            if type(plan) is _All and plan.required == (anchor, second):
                value = None if not plan.rest and not plan.excluded else plan
        else:
            top, path = self._filed, anchor
        _nested(top, path)[key] = value
        self._places[key] = (top, (path,))

    def remove(self, key: K) -> None:
        """Remove the query under `key`; raises KeyError if there is none."""
        del self._plans[key]
        top, paths = self._places.pop(key)
        for path in paths:
            _unfile(top, path, key)

    def match(self, docs: Sequence[AnalysedDocument]) -> dict[K, list[int]]:
        """The indexes of the documents each query matches; no key if none (as match_batch)."""
        return {key: indexes_of(mask) for key, mask in self.match_masks(docs).items()}

    def match_masks(self, docs: Sequence[AnalysedDocument]) -> dict[K, Mask]:
        """The documents each query matches, as a mask (bit i: docs[i]); no key if none.

        Queries of one key share that key's mask (the same int): the result is made without
        a step per such query.
        """
        found, shared = self.match_groups(docs)
        for mask, keys in shared:
            found.update(dict.fromkeys(keys, mask))
        return found

    def match_groups(self, docs: Sequence[AnalysedDocument]) -> Grouped[K]:
        """The matching queries: a mask each, or shared by a group matching the same documents.

        Each matching query is in exactly one of the two; no mask is 0. Queries of one key,
        and those excluding a key the batch lacks, are grouped under their key or anchor, so
        a caller can count per group rather than per query.
        """
        found: dict[K, Mask] = {}
        shared: list[tuple[Mask, Iterable[K]]] = []
        if not docs:
            return Grouped(found, shared)
        batch = _Batch(docs)
        with _collector_paused():
            self._match_shared(batch, found, shared.append)
            for space, filed in self._filed.items():
                for value in batch.present(space, filed):
                    for key, plan in filed[value].items():
                        mask = plan.evaluate(batch, None)
                        if mask:
                            found[key] = mask
            for key, plan in self._gathered(batch).items():
                mask = plan.evaluate(batch, None)
                if mask:
                    found[key] = mask
        return Grouped(found, shared)

    def _match_shared(
        self,
        batch: _Batch,
        found: dict[K, Mask],
        share: Callable[[tuple[Mask, Iterable[K]]], None],
    ) -> None:
        """The queries of one key, those excluding a key and those filed under a pair."""
        masks = batch.masks
        for space, single in self._single.items():
            for value in batch.present(space, single):
                share((masks[space, value], single[value]))
        for space, excluding in self._excluding.items():
            for value in batch.present(space, excluding):
                _match_excluding(batch, masks[space, value], excluding[value], found, share)
        for space, paired in self._paired.items():
            for value in batch.present(space, paired):
                _match_paired(batch, masks[space, value], paired[value], found)

    def candidates(self, docs: Sequence[AnalysedDocument]) -> list[K]:
        """The keys of the queries filed under an anchor the batch contains (those `match`
        evaluates or takes a mask for, and those it rules out by their second key)."""
        if not docs:
            return []
        batch = _Batch(docs)
        found: dict[K, object] = dict(self._gathered(batch))
        for flat in (self._single, self._filed):
            for space, filed in flat.items():
                for value in batch.present(space, filed):
                    found.update(filed[value])
        for nested in (self._paired, self._excluding):
            for space, anchored in nested.items():
                for value in batch.present(space, anchored):
                    found.update(_leaves(anchored[value]))
        return list(found)

    def _gathered(self, batch: _Batch) -> dict[K, _Plan]:
        """The unanchored queries, and those with several anchors of which one is present."""
        found = dict(self._unanchored)
        for space, filed in self._filed_often.items():
            for value in batch.present(space, filed):
                found.update(filed[value])
        return found
