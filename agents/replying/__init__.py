"""replying"""
