from django.urls import path

from labeling import views

app_name = "labeling"

urlpatterns = [
    path("", views.project_list, name="projects"),
    path("projects/<slug:slug>/label/", views.label, name="label"),
    path("projects/<slug:slug>/judge/", views.judge, name="judge"),
    path("projects/<slug:slug>/skip/", views.skip, name="skip"),
]
