"""HTML pages (Jinja2 + htmx): the Lab, a run live, gallery, demo, transfer, experiments, score, explainers."""
