"""Page-wide style rules Streamlit's own options do not offer.

The overlay pickers above the image ("Boxes", "Heatmaps") name each overlay by finding and source, e.g.
"Enlarged cardiomediastinum (classifier)". Streamlit draws a multiselect's chips on one line, cut with an
ellipsis and scrolled sideways inside a narrow field, so at 1280 or 1440 px wide a reader saw "Enlarg…" and
could not tell which box or heatmap a chip stood for. These rules give each picker the image column's
whole width and let its chips wrap onto further lines, each chip showing its whole name. They are scoped to
the pickers' widget keys (``cxr_boxes_*``, ``cxr_heats_*``, ui/study_panel.py), so no other widget changes.
"""

from __future__ import annotations

_PICKERS = ('[class*="st-key-cxr_boxes_"]', '[class*="st-key-cxr_heats_"]')


def _each(rule: str) -> str:
    """``rule`` (with ``{p}`` for the picker) once per picker, as one selector list."""
    return ", ".join(rule.format(p=p) for p in _PICKERS)


_PICKER_ROW = ('[data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"] > [data-testid="stVerticalBlock"] '
               '> [class*="st-key-cxr_boxes_"])')

PAGE_CSS = "\n".join([
    # the two pickers one above the other, each as wide as the image column
    f"{_PICKER_ROW} {{ flex-wrap: wrap; }}",
    f'{_PICKER_ROW} > [data-testid="stColumn"] {{ flex: 1 1 100%; min-width: 100%; }}',
    # the field grows with its chips instead of scrolling them sideways
    _each('{p} [data-testid="stMultiSelect"] div[role="group"]') + " { height: auto; max-height: none; }",
    _each('{p} [data-testid="stMultiSelectTagsContainer"]')
    + " { flex-wrap: wrap; overflow: visible; height: auto; min-width: 0; flex: 1 1 0;"
      " -webkit-mask-image: none; mask-image: none; }",
    # every chip shows its whole name (wrapping inside the chip only when one word is wider than the field)
    _each("{p} [data-tag]") + " { height: auto; max-width: 100%; }",
    _each("{p} [data-tag] > span[title]")
    + " { white-space: normal; overflow: visible; text-overflow: clip; max-width: none; overflow-wrap: break-word; }",
])


def style_page() -> None:
    """Add the page's style rules (a style-only ``st.html`` takes no room on the page)."""
    import streamlit as st

    st.html(f"<style>\n{PAGE_CSS}\n</style>")
