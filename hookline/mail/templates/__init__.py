"""The customer emails' Jinja2 templates: a subject, a text part and an HTML part each."""
