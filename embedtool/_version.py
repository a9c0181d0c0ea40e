"""The tool's version (recorded in every artefact's meta.json); its own module so low layers need not import the
package's public API."""

__version__ = "0.1.0"
