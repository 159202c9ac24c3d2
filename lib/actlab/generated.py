"""Small generated datasets that several notebooks share, built by seeded code (no download).

``ioi_prompts`` builds indirect-object-identification sentences in the style of
Wang et al. (2022): two names are introduced, one of them (the subject, S) is
repeated, and the model should complete with the other (the indirect object,
IO): "When Mary and John went to the park, John handed a book to" -> " Mary".
The templates, names, places and objects below were written for this project.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

NAMES = (
    "Mary", "John", "Alice", "Bob", "Sarah", "David", "Emma", "James", "Laura", "Michael", "Anna", "Peter",
    "Julia", "Thomas", "Kate", "Daniel", "Lucy", "Paul", "Rachel", "Mark", "Sophie", "Henry", "Grace", "Jack",
    "Clara", "Adam", "Helen", "Tom", "Rose", "Sam", "Amy", "Ben", "Emily", "George", "Lisa", "Steven",
)
PLACES = ("park", "station", "library", "market", "beach", "museum", "office", "school", "garden", "cafe")
OBJECTS = ("book", "ticket", "letter", "drink", "key", "map", "gift", "coin", "photo", "pen")

# {A} and {B} are the two names in order of introduction; {S} repeats one of them.
TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} handed a {object} to",
    "After {A} and {B} arrived at the {place}, {S} passed a {object} to",
    "While {A} and {B} were waiting at the {place}, {S} gave a {object} to",
    "Then {A} and {B} walked into the {place}, and {S} offered a {object} to",
    "Once {A} and {B} had left the {place}, {S} sent a {object} to",
    "Yesterday {A} and {B} met at the {place}, where {S} showed a {object} to",
)


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI sentence. ``answer`` is the IO name with a leading space; ``distractor`` the S name."""

    prompt: str
    io: str
    s: str
    order: Literal["ABBA", "BABA"]
    template: int
    place: str
    object: str

    @property
    def answer(self) -> str:
        return " " + self.io

    @property
    def distractor(self) -> str:
        return " " + self.s

    def corrupted(self, third_name: str) -> str:
        """The same sentence with the repeated name replaced by an unrelated name (the usual ABC baseline)."""
        return TEMPLATES[self.template].format(A=self.io if self.order == "ABBA" else self.s,
                                               B=self.s if self.order == "ABBA" else self.io, S=third_name,
                                               place=self.place, object=self.object)


def single_token_names(tokenizer) -> list[str]:  # noqa: ANN001 - any Hugging Face tokenizer
    """The names whose leading-space form is one token for ``tokenizer`` (so logit differences are clean)."""
    return [n for n in NAMES if len(tokenizer(" " + n, add_special_tokens=False)["input_ids"]) == 1]


def ioi_prompts(
    n: int,
    seed: int = 0,
    tokenizer=None,  # noqa: ANN001
    order: Literal["ABBA", "BABA", "mixed"] = "mixed",
    templates: tuple[int, ...] | None = None,
) -> list[IOIPrompt]:
    """``n`` IOI prompts drawn with a seeded generator.

    With a tokenizer, only names that are a single token (with their leading
    space) are used. ``order`` picks ABBA ("A and B ..., B gave to" -> A), BABA,
    or alternates them. ``templates`` restricts the template indices.
    """
    names = single_token_names(tokenizer) if tokenizer is not None else list(NAMES)
    if len(names) < 3:
        raise ValueError("fewer than three single-token names for this tokenizer")
    chosen_templates = templates if templates is not None else tuple(range(len(TEMPLATES)))
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        io, s = rng.sample(names, 2)
        this_order = order if order != "mixed" else ("ABBA" if i % 2 == 0 else "BABA")
        template = rng.choice(chosen_templates)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        first, second = (io, s) if this_order == "ABBA" else (s, io)
        text = TEMPLATES[template].format(A=first, B=second, S=s, place=place, object=obj)
        prompts.append(IOIPrompt(text, io, s, this_order, template, place, obj))
    return prompts


@dataclass(frozen=True)
class IOIBatch:
    """IOI prompts tokenised for a model, with the positions and answer ids the circuit analyses use.

    Every tensor has one row per prompt. Positions index ``input_ids`` (right padding):
    ``io_pos`` and ``s1_pos`` are the two introduced names, ``s2_pos`` the repeated
    subject, ``end`` the last token, whose logits predict the answer.
    """

    prompts: list[IOIPrompt]
    input_ids: "torch.Tensor"
    attention_mask: "torch.Tensor"
    io_id: "torch.Tensor"
    s_id: "torch.Tensor"
    io_pos: "torch.Tensor"
    s1_pos: "torch.Tensor"
    s2_pos: "torch.Tensor"
    end: "torch.Tensor"

    def inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def logit_diff(self, logits: "torch.Tensor") -> "torch.Tensor":
        """logit(IO) - logit(S) at the end position, per prompt (``logits``: the model's (batch, seq, vocab))."""
        import torch

        rows = torch.arange(len(self.prompts))
        at_end = logits[rows, self.end].float()
        return at_end[rows, self.io_id] - at_end[rows, self.s_id]


def ioi_batch(lm, prompts: list[IOIPrompt]) -> IOIBatch:  # noqa: ANN001 - an actlab LanguageModel
    """Tokenise ``prompts`` for ``lm`` and locate IO, S1, S2 and the end; names must be single tokens.

    Raises when a name is not one token, or the subject does not occur exactly twice.
    """
    import torch

    batch = lm.tokenize([p.prompt for p in prompts], padding_side="right")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    io_id = torch.tensor([lm.token_id(p.answer) for p in prompts])
    s_id = torch.tensor([lm.token_id(p.distractor) for p in prompts])
    io_pos, s1_pos, s2_pos = [], [], []
    for row, (p, io, s) in enumerate(zip(prompts, io_id.tolist(), s_id.tolist())):
        real = ids[row, : int(mask[row].sum())]
        where_s = (real == s).nonzero().flatten().tolist()
        where_io = (real == io).nonzero().flatten().tolist()
        if len(where_s) != 2 or len(where_io) != 1:
            raise ValueError(f"prompt {row} ({p.prompt!r}): S must occur twice and IO once as tokens, found "
                             f"S at {where_s} and IO at {where_io}")
        io_pos.append(where_io[0])
        s1_pos.append(where_s[0])
        s2_pos.append(where_s[1])
    return IOIBatch(list(prompts), ids, mask, io_id, s_id, torch.tensor(io_pos), torch.tensor(s1_pos),
                    torch.tensor(s2_pos), mask.sum(1) - 1)
