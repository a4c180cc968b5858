"""A spec the researcher wrote or edited, read back and validated: one rule for every path that takes one.

The spec review (`approve --edit`), the CLI's check before it resumes the graph, and the no-model path's `--spec FILE`
all read spec.md through `reread_edited_spec`, so a spec the researcher wrote passes exactly the checks a model's draft
does: no skeleton TODO marks left, this paper's slug, claim ids, values and quotes found in the paper, targets present
(or asked for), and the data found on this machine. Kept apart from the graph nodes so the nodes and the CLI import
it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from agent.datafind import with_local_data
from agent.graph import skeleton
from agent.spec import Spec, SpecError, check_against_paper, load_spec
from retrieval.models import Paper

NO_TARGETS = (
    "the spec has no targets yet: add the values to replicate (`replicate claims add ID --value V --page P "
    "--metric M --figure 'Figure N'`, then `replicate reject ID --feedback 'target R1'`), or add a target with "
    "`source: researcher`, page and figure to spec.md and `replicate approve ID --edit`"
)


def reread_edited_spec(spec_md: Path, paper: Paper) -> Spec:
    """spec.md as the researcher left it, validated against the paper, its data found on this machine. Raises
    SpecError."""
    skeleton.check_filled(spec_md)  # a skeleton's TODO marks, named, before the type errors they would cause
    spec = load_spec(spec_md)
    if spec.paper_slug != paper.slug:
        raise SpecError(f"spec.md paper_slug {spec.paper_slug!r} is not this paper ({paper.slug!r})")
    problems = check_against_paper(spec, paper)
    if problems:
        raise SpecError("edited spec.md does not match the paper: " + "; ".join(problems))
    if not spec.targets:
        raise SpecError(NO_TARGETS)
    return with_local_data(spec)
