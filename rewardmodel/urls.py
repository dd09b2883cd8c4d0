from django.urls import path

from rewardmodel import views

app_name = "rewardmodel"

urlpatterns = [
    path("<slug:slug>/", views.status, name="status"),
    path("<slug:slug>/retrain/", views.retrain, name="retrain"),
    path("<slug:slug>/refresh/", views.refresh, name="refresh"),
    path("<slug:slug>/versions/<int:version>/activate/", views.activate, name="activate"),
]
