"""Programs and helpers the tests run; ``import course_lib`` never loads these."""
