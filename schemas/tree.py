"""A chat's message tree, rebuilt from its events in stream order (API, projector and export share it).

Nodes are user messages and replies. A reply's parent is the message it answers
(`reply.requested.message_id`), so regenerating adds a sibling reply. A message's parent is
`parent_id`; an edit (`edit_of`) is a new sibling of the edited message under `parent_id`
(None: the root). A message with neither was appended before branches existed: it follows
the end of the active path at the time it was posted.

The active path starts at the root and, at each fork, takes the selected child. Adding a node
selects the path to it (a regenerated reply or an edit becomes the active branch), and so does
a `branch.selected` (or a side-by-side `choice.made`, for its chosen reply): it selects every fork on
the path to its node. One exception: a reply to a
message that a later post already follows (two posts at once: the second was appended after the
first message and before its reply request) stays a side branch, so the later post keeps its
place in the conversation. Every node with children has a selected child.

The tree keeps its active path as it changes, so folding a chat costs O(1) a turn, not a walk
from the root: a select walks up only to the first node already on the path, replaces the path
below it, and follows the selections down from the selected node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from schemas.chat import BranchSelected, ChatEvent, ChoiceMade, MessagePosted, ReplyRequested

ROOT = ""  # the parent key of first messages


@dataclass
class Node:
    """A message or reply in the tree."""

    node_id: str
    kind: Literal["message", "reply"]
    parent: str  # ROOT for first messages
    seq: int
    children: list[str] = field(default_factory=list)


@dataclass
class ChatTree:
    """Fold a chat's MessagePosted, ReplyRequested and BranchSelected events (in seq order)."""

    nodes: dict[str, Node] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    selected: dict[str, str] = field(default_factory=dict)  # parent key -> chosen child
    _path: list[str] = field(default_factory=list, repr=False)  # the active path, root first
    _depth: dict[str, int] = field(default_factory=dict, repr=False)  # node on the path -> its index

    def apply(self, seq: int, event: ChatEvent) -> None:
        """Apply one event; others are ignored."""
        match event:
            case MessagePosted():
                self.add_message(event.message_id, seq, event.parent_id, event.edit_of)
            case ReplyRequested():
                self.add(event.reply_id, "reply", event.message_id, seq)
            case BranchSelected():
                self.select(event.node_id)
            case ChoiceMade():
                self.select(event.reply_id)

    def add_message(self, message_id: str, seq: int, parent_id: str | None, edit_of: str | None) -> None:
        """Add a posted message where its fields put it (see the module docstring)."""
        if edit_of is not None:
            parent = parent_id or ROOT
        elif parent_id is not None:
            parent = parent_id
        else:
            parent = self.leaf() or ROOT
        self.add(message_id, "message", parent, seq)

    def add(self, node_id: str, kind: Literal["message", "reply"], parent: str, seq: int) -> None:
        """Add a node under `parent` (unknown parents count as the root); the path to it becomes active,
        except for a reply to a message that a later post already followed (see `_overtaken`)."""
        if node_id in self.nodes:
            return
        if parent != ROOT and parent not in self.nodes:
            parent = ROOT
        overtaken = kind == "reply" and self._overtaken(parent)
        self.nodes[node_id] = Node(node_id, kind, parent, seq)
        self.children(parent).append(node_id)
        if not overtaken:
            self.select(node_id)

    def _overtaken(self, message_id: str) -> bool:
        """Whether a message was already followed by a message when its reply is requested: a post made
        after it before its reply was asked for (two posts at once). The reply stays a side branch;
        taking the active path would drop that later post from every context after it."""
        if message_id == ROOT or self.nodes[message_id].kind != "message":
            return False
        return any(self.nodes[child].kind == "message" for child in self.nodes[message_id].children)

    def children(self, parent: str) -> list[str]:
        """The children of a node (or of ROOT), oldest first."""
        return self.roots if parent == ROOT else self.nodes[parent].children

    def select(self, node_id: str) -> None:
        """Choose every fork on the path to `node_id`."""
        if node_id not in self.nodes:
            return
        above: list[str] = []  # the path up from node_id to the first node already active
        current = node_id
        while current != ROOT and current not in self._depth:
            above.append(current)
            current = self.nodes[current].parent
        if not above:
            return  # already on the active path: every fork above it is chosen as asked
        keep = 0 if current == ROOT else self._depth[current] + 1
        for dropped in self._path[keep:]:
            del self._depth[dropped]
        del self._path[keep:]
        for node in reversed(above):
            self.selected[self.nodes[node].parent] = node
            self._extend(node)
        chosen = self.selected.get(node_id)
        while chosen is not None:  # below the node, the path follows what was chosen before
            self._extend(chosen)
            chosen = self.selected.get(chosen)

    def _extend(self, node_id: str) -> None:
        self._depth[node_id] = len(self._path)
        self._path.append(node_id)

    def path_to(self, node_id: str) -> list[str]:
        """The node ids from the root down to `node_id` (empty when unknown)."""
        path: list[str] = []
        current = node_id
        while current != ROOT and current in self.nodes:
            path.append(current)
            current = self.nodes[current].parent
        return path[::-1]

    def active_path(self) -> list[str]:
        """The active branch from the root to its leaf."""
        return list(self._path)

    def leaf(self) -> str | None:
        """The last node of the active path."""
        return self._path[-1] if self._path else None

    def siblings(self, node_id: str) -> list[str]:
        """The node and its siblings, oldest first."""
        return list(self.children(self.nodes[node_id].parent))


def build_tree(events: Iterable[tuple[int, ChatEvent]]) -> ChatTree:
    """The tree of a chat from its (seq, event) pairs in stream order."""
    tree = ChatTree()
    for seq, event in events:
        tree.apply(seq, event)
    return tree
