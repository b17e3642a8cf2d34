"""Clinician sign-off: review each AI finding, edit the report, sign under a login, keep the audit trail.

Python API::

    from agents.review import Reviewer, open_review, ReviewStore
    review = open_review(graph, thread_id, reviewer=Reviewer.from_oidc(st.user), settings=settings)
    review.accept("pleural_effusion"); review.reject("pneumothorax", note="skin fold")
    review.add("rib fracture"); review.edit_report("...")
    apply_edits(review, [{"id": "cardiomegaly", "action": "present"}])   # the UI's / server's rows
    # a study compared with a prior: its change rows, each accepted, rejected or set to another value
    review.accept_change("pleural_effusion"); review.set_change("cardiomegaly", "stable", note="same size")
    signed = review.sign()                      # refused while a flagged finding has no action
    ReviewStore.for_settings(settings).save_signed(signed)   # written once, never rewritten

Verified outputs of a signed review: ``agents.review.outputs`` (DICOM SR, FHIR, STOW-RS push).
"""

from agents.review.edits import apply_change_edits, apply_edits
from agents.review.model import (
    Change,
    ChangeReview,
    FindingReview,
    Review,
    Reviewer,
    ReviewError,
    ReviewIncomplete,
    ReviewSigned,
    SignedReview,
)
from agents.review.store import ReviewStore, forget_reviews
from agents.review.thread import open_review, review_from_values

__all__ = ["Change", "ChangeReview", "FindingReview", "Review", "ReviewError", "ReviewIncomplete", "ReviewSigned", "ReviewStore",
           "Reviewer", "SignedReview", "apply_change_edits", "apply_edits", "forget_reviews", "open_review", "review_from_values"]
