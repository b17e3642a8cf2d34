"""Prior-report retrieval in one package: corpora (`corpus`), the sentence embedder (`embedder`), the
persisted FAISS index (`index`) and the tool the graph runs (`tool`)."""

from tools.retrieval.embedder import embedder_weight_status
from tools.retrieval.tool import RetrievalTool, neighbor_calls

__all__ = ["RetrievalTool", "embedder_weight_status", "neighbor_calls"]
