"""The node proxy's view of the mesh: immutable domain objects built from control's wire items."""
