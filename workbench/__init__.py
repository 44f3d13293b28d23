"""The face of the workbench: the Gradio app (one module per tab), the CLI and the charts. No ML logic here."""
