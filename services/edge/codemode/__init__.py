"""Code Mode: a view's tools offered as Python stubs and run by model-written code.

`stubs` writes the `.pyi` files and docs from the catalog, `sandbox` runs a script in
pydantic-monty under its limits, and `meta` answers the four meta-tools a client sees
(`listToolFiles`, `readToolFile`, `getToolDocs`, `executeToolCode`).
"""
