"""Scoring generated text without a network: language, BLEU, lexical toxicity and perplexity.

Each scorer the cards name lives here once:

- :func:`language_of` and :func:`in_language`: language identification with ``langdetect``
  (its profiles ship in the package), seeded so that a rerun gives the same answer;
- :func:`bleu` and :func:`sentence_bleu`: BLEU with ``sacrebleu``'s standard settings;
- :func:`toxicity`: the probability of overt profanity from ``alt-profanity-check`` (a linear
  model on word n-grams shipped in its wheel). It sees words, not meaning: a low score is weak
  evidence that a text is harmless;
- :func:`continuation_perplexity`: the perplexity of a continuation given its prompt under a
  model (the unsteered model, usually), the usual fluency check for steered text.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from .generation import score_candidates
from .hooks import EditFn
from .models import LanguageModel

#: texts with fewer letters than this get no language (language ID guesses wildly on them)
MIN_LETTERS = 3


def language_of(texts: Sequence[str], seed: int = 0) -> list[str | None]:
    """The ISO 639-1 code ``langdetect`` gives each text (``"fr"``, ``"en"``, ...), or None.

    None marks texts the tool cannot judge: empty, numbers or punctuation only, or fewer than
    :data:`MIN_LETTERS` letters. Count those as failures, not as any language.
    """
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = seed
    found: list[str | None] = []
    for text in texts:
        if len(re.findall(r"[^\W\d_]", text)) < MIN_LETTERS:
            found.append(None)
            continue
        try:
            found.append(detect(text))
        except LangDetectException:
            found.append(None)
    return found


def in_language(texts: Sequence[str], language: str, seed: int = 0) -> np.ndarray:
    """1.0 where a text is identified as ``language``, else 0.0 (unjudgeable texts count as 0)."""
    return np.array([float(found == language) for found in language_of(texts, seed)])


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of hypotheses against one reference each, with sacrebleu's defaults."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def sentence_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """BLEU (0-100) of each hypothesis against its reference, smoothed as sacrebleu does for sentences."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return np.array([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hypotheses, references)])


def toxicity(texts: Sequence[str]) -> np.ndarray:
    """The probability of profanity of each text (``alt-profanity-check``'s ``predict_prob``)."""
    from profanity_check import predict_prob

    if not texts:
        return np.zeros(0)
    return np.asarray(predict_prob(list(texts)), dtype=float)


def continuation_perplexity(lm: LanguageModel, prompts: Sequence[str], continuations: Sequence[str],
                            edits: Mapping[str, EditFn] | None = None,
                            add_special_tokens: bool = True) -> np.ndarray:
    """exp(mean negative log-likelihood) of each continuation's tokens given its prompt, under ``lm``.

    Pass no ``edits`` to score under the unsteered model. An empty continuation scores NaN.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    values = []
    for prompt, continuation in zip(prompts, continuations):
        if not lm.tokenizer(continuation, add_special_tokens=False)["input_ids"]:
            values.append(float("nan"))
            continue
        scores = score_candidates(lm, prompt, [continuation], edits=edits, add_special_tokens=add_special_tokens)
        values.append(float(np.exp(-scores.mean[0].item())))
    return np.array(values)
