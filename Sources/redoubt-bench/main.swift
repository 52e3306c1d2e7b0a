import CMallocTune
redoubt_tune_malloc()
print("bench")
