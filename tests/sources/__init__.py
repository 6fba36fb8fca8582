"""The Source contract suite: one set of cases, run against every source."""
