"""Domain knowledge shared by every tool: the finding vocabulary, evidence types, report labeling, corpora, index."""
