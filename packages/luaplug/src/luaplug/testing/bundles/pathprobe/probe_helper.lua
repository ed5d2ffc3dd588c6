-- A module next to main.lua: found through the bundle dir on package.path.
return { value = 1234 }
