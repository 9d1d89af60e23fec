"""The chat tree's kept active path: checked against walking the tree, and the race of two posts at once."""

from __future__ import annotations

import pytest


class _WalkingTree:
    """The tree's rules written the slow, obvious way: select walks from the node to the root every
    time and the active path is walked from the root. The fast tree must agree with it exactly."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {"": []}
        self.selected: dict[str, str] = {}
        self.messages: set[str] = set()

    def add(self, node: str, parent: str, reply: bool = False) -> None:
        if node in self.parent:
            return
        parent = parent if parent in self.parent else ""
        overtaken = reply and any(child in self.messages for child in self.children[parent])
        overtaken = overtaken and parent in self.messages
        self.parent[node] = parent
        self.children[parent].append(node)
        self.children[node] = []
        if not overtaken:
            self.select(node)

    def select(self, node: str) -> None:
        while node in self.parent:
            self.selected[self.parent[node]] = node
            node = self.parent[node]

    def active_path(self) -> list[str]:
        path, at = [], ""
        while self.children[at]:
            chosen = self.selected.get(at)
            at = chosen if chosen in self.children[at] else self.children[at][-1]
            path.append(at)
        return path


@pytest.mark.parametrize("seed", range(20))
def test_the_kept_active_path_matches_walking_the_tree(seed: int) -> None:
    """Random posts (after the leaf, under a node, edits), regenerations and branch selections."""
    import random

    from schemas.tree import ChatTree

    rng = random.Random(seed)
    fast, slow = ChatTree(), _WalkingTree()
    messages: list[str] = []
    for seq in range(1, 300):
        known = list(slow.parent)
        roll = rng.random()
        node = f"n{seq}"
        if roll < 0.3 or not messages:
            parent = slow.active_path()[-1] if slow.active_path() else ""
            fast.add_message(node, seq, None, None)
            slow.add(node, parent)
            slow.messages.add(node)
            messages.append(node)
        elif roll < 0.5:
            parent = rng.choice(known)
            fast.add_message(node, seq, parent, None)
            slow.add(node, parent)
            slow.messages.add(node)
            messages.append(node)
        elif roll < 0.6:
            edited = rng.choice(messages)
            parent = slow.parent[edited]
            fast.add_message(node, seq, parent or None, edited)
            slow.add(node, parent)
            slow.messages.add(node)
            messages.append(node)
        elif roll < 0.8:
            answered = rng.choice(messages)
            fast.add(node, "reply", answered, seq)
            slow.add(node, answered, reply=True)
        else:
            chosen = rng.choice([*known, "unknown"])
            fast.select(chosen)
            slow.select(chosen)
        assert fast.active_path() == slow.active_path()
        assert fast.selected == slow.selected
        assert fast.leaf() == (slow.active_path() or [None])[-1]


def test_a_reply_requested_after_a_later_post_stays_a_side_branch() -> None:
    """Two posts at once: the second followed the first message before its reply was requested. The
    late reply request must not take the active path, or the second post drops out of every context."""
    from schemas.tree import ChatTree

    tree = ChatTree()
    tree.add_message("m1", 1, None, None)
    tree.add_message("m2", 2, "m1", None)  # posted after m1, before m1's reply was asked for
    tree.add("r1", "reply", "m1", 3)
    tree.add("r2", "reply", "m2", 4)
    assert tree.active_path() == ["m1", "m2", "r2"]
    assert tree.siblings("m2") == ["m2", "r1"]
    tree.add("r1b", "reply", "m2", 5)  # a regeneration still becomes the active branch
    assert tree.active_path() == ["m1", "m2", "r1b"]
