import CMallocTune
import RedoubtCore

redoubt_tune_malloc()
print("redoubt \(RedoubtVersion.string)")
