"""SMART on FHIR: the scope policy, the embedded authorization server, token verification.

Framework-free: the REST door adapts HTTP to these calls (``rest/smart.py``), so the same
checks serve every door.
"""
