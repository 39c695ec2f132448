from fer2neuro.launch import run

run()
