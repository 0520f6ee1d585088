"""The company's support tools, as `@agentflow.tool` functions, and their database.

`tools.support` holds the tools and `SupportContext`, `tools.db` the database,
`tools.seed` the demo data (`agentflow demo seed`). They import `agentflow`; `agentflow`
never imports them.
"""
