"""The shadow objects: AnnDataShadow, its aligned mappings and raw."""
