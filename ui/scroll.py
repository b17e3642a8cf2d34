"""Open the newest exchange at its top: the chat pane otherwise follows the end of a long reply, and
the reader has to scroll back up to find where the report begins.

Streamlit has no scroll API, so a zero-height component runs a few lines in the page once per new turn
(its HTML changes only when the number of turns does). It reads and scrolls the page's own chat pane,
nothing else.
"""

from __future__ import annotations

import streamlit.components.v1 as components

_SCRIPT = """<script>
// turn %(turns)d
const doc = window.parent.document;
function openAtTop() {
  const pane = doc.querySelector('.st-key-%(pane)s');
  if (!pane) return;
  const users = pane.querySelectorAll('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])');
  if (!users.length) return;
  const last = users[users.length - 1];
  let box = last.parentElement;
  while (box && box !== pane.parentElement && box.scrollHeight <= box.clientHeight + 1) box = box.parentElement;
  if (!box || box === pane.parentElement) box = pane;
  box.scrollTop += last.getBoundingClientRect().top - box.getBoundingClientRect().top;
}
[50, 300, 900].forEach(ms => setTimeout(openAtTop, ms));
</script>"""


def open_latest_turn_at_top(pane_key: str, turns: int) -> None:
    """Scroll the pane keyed ``pane_key`` so its latest question is at the top (once per new turn)."""
    if turns:
        components.html(_SCRIPT % {"turns": turns, "pane": pane_key}, height=0)
