"""StopMatcher alone: stop texts across pieces, held-back prefixes, several stop texts."""

from __future__ import annotations

import pytest

from services.llm_worker.stops import StopMatcher


def feed(matcher: StopMatcher, pieces: list[str]) -> list[str]:
    """What the matcher releases for each piece, then at the end."""
    released = [matcher.push(piece) for piece in pieces]
    return [*released, matcher.flush()]


def test_a_stop_text_spanning_pieces_is_cut_and_never_released() -> None:
    matcher = StopMatcher(["END"])
    out = feed(matcher, ["Hello E", "N", "D and more", "ignored"])
    assert out == ["Hello ", "", "", "", ""]
    assert matcher.stopped


def test_a_partial_prefix_is_held_then_released_when_it_is_not_a_stop() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.push("fine E") == "fine "  # "E" may start END
    assert matcher.push("N") == ""  # "EN" still may
    assert matcher.push("O") == "ENO"  # it did not
    assert matcher.push("and E") == "and "
    assert matcher.flush() == "E"  # the reply ended: the held tail is text
    assert not matcher.stopped


def test_several_stop_texts_the_first_to_complete_wins() -> None:
    # "b" completes before "abcd" could: the reply ends before "b".
    assert "".join(feed(StopMatcher(["abcd", "b"]), ["x", "a", "b", "c", "d"])) == "xa"
    # The same text in one piece gives the same cut.
    assert "".join(feed(StopMatcher(["abcd", "b"]), ["xabcd"])) == "xa"
    # Completing together: the longer (earlier) one wins.
    assert "".join(feed(StopMatcher(["cd", "bcd"]), ["ab", "cd"])) == "a"
    assert "".join(feed(StopMatcher(["\n\n", "User:"]), ["hi ther", "e\nUs", "er: x"])) == "hi there\n"


def test_a_stop_at_the_very_start_gives_an_empty_reply() -> None:
    matcher = StopMatcher(["###"])
    assert feed(matcher, ["#", "##", "rest"]) == ["", "", "", ""]
    assert matcher.stopped
    assert feed(StopMatcher(["a"]), ["abc"]) == ["", ""]


def test_overlapping_prefixes_keep_the_longest_open_tail() -> None:
    matcher = StopMatcher(["aab"])
    assert matcher.push("aaa") == "a"  # "aa" may start "aab"
    assert matcher.push("b") == ""
    assert matcher.stopped


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_the_cut_does_not_depend_on_how_the_text_is_split(size: int) -> None:
    text = "The answer: 42.\nQuestion: why?\n\nAnswer"
    stops = ["\n\n", "Question:", "wh"]
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    assert "".join(feed(StopMatcher(stops), pieces)) == "The answer: 42.\n"


def test_without_a_stop_everything_is_released_unchanged() -> None:
    text = "Déjà vu 😀, ENDLESS? E"
    assert "".join(feed(StopMatcher(["END!"]), list(text))) == text
    assert "".join(feed(StopMatcher([]), [text])) == text
