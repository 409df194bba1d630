"""Router: scored answers in (`nps.scored.#`), actions out (`route.<action>`)."""
