"""The browser side of ferry: the volunteer widget's modules, the pages, and their bundler."""
