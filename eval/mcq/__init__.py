"""Multiple-choice benchmarks (ChestAgentBench, ReXVQA): read the published files, answer each question
on a fresh thread through agents/turn/multiple_choice.py, score with confidence intervals, report."""
