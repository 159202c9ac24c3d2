from actlab.generated import TEMPLATES, ioi_prompts, single_token_names


class WordTokenizer:
    """Splits on spaces; names in ``long_names`` become two tokens."""

    long_names = {"Elizabeth"}

    def __call__(self, text, add_special_tokens=False):
        ids = []
        for word in text.split():
            ids += [1, 2] if word in self.long_names else [1]
        return {"input_ids": ids}


def test_ioi_prompts_are_seeded_and_well_formed():
    first = ioi_prompts(20, seed=3)
    assert first == ioi_prompts(20, seed=3)
    assert first != ioi_prompts(20, seed=4)
    for p in first:
        assert p.io != p.s
        assert p.prompt.count(p.s) == 2 and p.prompt.count(p.io) == 1
        assert p.answer == " " + p.io
        head = p.prompt.split(",")[0]
        expected = [p.io, p.s] if p.order == "ABBA" else [p.s, p.io]
        assert head.index(expected[0]) < head.index(expected[1])
    assert {p.order for p in first} == {"ABBA", "BABA"}


def test_corrupted_prompt_replaces_only_the_repeated_name():
    p = ioi_prompts(1, seed=0, order="BABA")[0]
    corrupted = p.corrupted("Zed")
    assert corrupted.count(p.s) == 1 and "Zed" in corrupted and corrupted.count(p.io) == 1


def test_names_filtered_to_single_tokens():
    names = single_token_names(WordTokenizer())
    assert names and "Elizabeth" not in names
    assert len(TEMPLATES) >= 4
