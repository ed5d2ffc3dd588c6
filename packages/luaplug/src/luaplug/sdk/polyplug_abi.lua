-- polyplug_abi: the name bundles require; the very same module table as `abi`.
return require("abi")
