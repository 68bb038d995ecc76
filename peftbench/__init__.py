"""peftbench: parameter-efficient fine-tuning methods against full fine-tuning, measured.

The layers install beneath this one package and data flows one way through them:
conf -> methods -> experiments (runs, records) -> analysis (reports); the command line here sits
on top of them all.
"""
