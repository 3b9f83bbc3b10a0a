"""Candidates: what a study knows about each candidate, and how sure it is.

A candidate is everything that decides a student's training (kdnas/candidates/_identity.py); each trial that
trains it is a replicate with a seed of its own; the candidate's validation accuracy is the mean of its
replicates with a standard error and a 90 % interval (_estimate.py). The candidate table (_table.py) holds them,
with the front computed on means; intensification (_intensify.py) chooses which candidate to train again; rungs (_rungs.py) which
candidates go on to a longer budget.
"""

from kdnas.candidates._estimate import (LEVEL, Difference, Estimate, binomial_variance, difference, estimate,
                                        mean_difference, overdispersion)
from kdnas.candidates._identity import canonical, candidate_key
from kdnas.candidates._intensify import Choice, choose, due
from kdnas.candidates._rungs import (CARRIED, EPOCHS, PROMOTED_FROM, TWIN_OF, Ladder, Merged, twin_params, Promotion, crowding, kept_count,
                                     nondominated_ranks, rank, rung_of)
from kdnas.candidates._table import CHECKPOINT, INTENSIFY, KEY, REUSED, RUN, RUNG, CandidateTable, Entry, trial_key

__all__ = ["binomial_variance", "candidate_key", "CandidateTable", "canonical", "choose", "Choice", "difference",
           "Difference", "due", "Entry", "estimate", "Estimate", "INTENSIFY", "KEY", "LEVEL", "mean_difference",
           "overdispersion", "REUSED", "trial_key", "CARRIED", "CHECKPOINT", "EPOCHS", "PROMOTED_FROM", "RUN", "RUNG", "Ladder", "Merged", "Promotion", "TWIN_OF", "twin_params",
           "crowding", "kept_count", "nondominated_ranks", "rank", "rung_of"]
